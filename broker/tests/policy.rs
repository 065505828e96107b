//! The certificate policy enforced by the running broker, over real mutual TLS with rumqttc:
//! zones and conduits, placeholders, identity from a SAN URI, quotas, 3.1.1 refusals and a
//! reload that tightens rights on live connections.

mod common;

use std::net::SocketAddr;

use common::{Client4, Client5, Env, TestCa};
use converge_broker::config::Config;
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa};
use rcgen::{KeyPair, KeyUsagePurpose, SanType};
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;

/// Cell devices come from "Cell CA" and are named by a SAN URI; SCADA servers from "Test CA"
/// (the CA that also signs the server), named by CN. Cell A telemetry may cross to SCADA;
/// nothing of cell B may.
fn policy(cell_zones: &str, scada_subscribe: &str) -> String {
    format!(
        r#"version = 1
[[ca]]
id = "cell-ca"
subject = "CN=Cell CA"
[[ca]]
id = "ot-ca"
subject = "CN=Test CA"

[[zone]]
id = "cell-a"
security_level = 2
trusted_cas = ["cell-ca"]
namespace = ["plant1/cell-a/#"]
[[zone]]
id = "cell-b"
security_level = 2
trusted_cas = ["cell-ca"]
namespace = ["plant1/cell-b/#"]
[[zone]]
id = "scada"
security_level = 3
trusted_cas = ["ot-ca"]
namespace = ["plant1/scada/#"]

[[conduit]]
id = "cell-a-to-scada"
from = "cell-a"
to = "scada"
topics = ["plant1/cell-a/+/telemetry/#"]
max_qos = 1
[[conduit]]
id = "scada-to-cell-a"
from = "scada"
to = "cell-a"
topics = ["plant1/cell-a/+/cmd/#"]
max_qos = 1

[[profile]]
id = "cell-device"
issuers = ["cell-ca"]
device = "san_uri"
zone = "san_uri"
san_uri = "urn:dev:plant1:{{zone}}:{{device}}"
zones = {cell_zones}
identity = "${{zone}}.${{device}}"
publish = ["plant1/${{zone}}/${{device}}/telemetry/#"]
subscribe = ["plant1/${{zone}}/${{device}}/cmd/#"]
max_qos = 1
messages_per_second = 5
message_burst = 5

[[profile]]
id = "scada-server"
issuers = ["ot-ca"]
device = "cn"
zone = {{ fixed = "scada" }}
publish = ["plant1/scada/${{device}}/#", "plant1/cell-a/+/cmd/#"]
subscribe = {scada_subscribe}
max_qos = 2
"#
    )
}

const OPEN: (&str, &str) = (
    r#"["cell-a", "cell-b"]"#,
    r#"["plant1/+/+/telemetry/#", "plant1/scada/#"]"#,
);

struct Plant {
    env: Env,
    cell_ca: TestCa,
}

impl Plant {
    fn new() -> Plant {
        let env = Env::new();
        let cell_ca = TestCa::new("Cell CA");
        // The listener trusts both CAs; the policy tells them apart.
        std::fs::write(
            env.path("ca.pem"),
            format!("{}{}", env.ca.cert_pem, cell_ca.cert_pem),
        )
        .unwrap();
        std::fs::write(env.path("policy.toml"), policy(OPEN.0, OPEN.1)).unwrap();
        Plant { env, cell_ca }
    }

    fn config(&self, c: &mut Config) {
        c.security.policy_file = Some(self.env.path("policy.toml"));
    }

    /// A cell device certificate: CN `cn`, SAN URI `urn:dev:plant1:{zone}:{device}`.
    fn cell_device(&self, cn: &str, zone: &str, device: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:dev:plant1:{zone}:{device}")
                .try_into()
                .unwrap(),
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cell_ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    async fn cell(&self, addr: SocketAddr, zone: &str, device: &str) -> Client5 {
        let id = format!("{zone}.{device}");
        let cert = self.cell_device(device, zone, device);
        Client5::connect(self.env.v5_as(&id, &cert, addr))
            .await
            .unwrap()
    }
}

async fn publish_reason(c: &mut Client5, topic: &str, payload: &str) -> PubAckReason {
    c.client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_owned())
        .await
        .unwrap();
    c.expect("PUBACK", |p| match p {
        Packet::PubAck(a) => Some(a.reason),
        _ => None,
    })
    .await
}

async fn suback(c: &mut Client5, filter: &str) -> SubscribeReasonCode {
    c.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    c.suback().await.return_codes[0]
}

fn denied(running: &converge_broker::server::Running, action: &str) -> u64 {
    running
        .broker
        .metrics
        .authorization_denied
        .with_label_values(&[action, "0x87"])
        .get()
}

#[tokio::test]
async fn data_crosses_zones_only_through_conduits() {
    let plant = Plant::new();
    let running = plant.env.start_with(|c| plant.config(c)).await;
    let addr = running.tls_addr.unwrap();
    let mut scada = Client5::connect(plant.env.v5("hmi-1", addr)).await.unwrap();
    assert_eq!(
        suback(&mut scada, "plant1/+/+/telemetry/#").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    let mut press = plant.cell(addr, "cell-a", "press-01").await;
    let mut robot = plant.cell(addr, "cell-b", "robot-07").await;

    let ok = PubAckReason::Success;
    assert_eq!(
        publish_reason(&mut press, "plant1/cell-a/press-01/telemetry/t", "a1").await,
        ok
    );
    // Cell B may publish in its own namespace, but no conduit carries it to SCADA.
    assert_eq!(
        publish_reason(&mut robot, "plant1/cell-b/robot-07/telemetry/t", "b1").await,
        ok
    );
    assert_eq!(
        publish_reason(&mut press, "plant1/cell-a/press-01/telemetry/t", "a2").await,
        ok
    );
    let got: Vec<_> = [scada.publish_packet().await, scada.publish_packet().await]
        .iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(got, ["a1", "a2"], "cell B's message must not reach SCADA");
    assert_eq!(denied(&running, "deliver"), 1);
    // A second message from cell B is withheld too: counted, but audited only once.
    assert_eq!(
        publish_reason(&mut robot, "plant1/cell-b/robot-07/telemetry/t", "b2").await,
        ok
    );
    assert_eq!(
        publish_reason(&mut press, "plant1/cell-a/press-01/telemetry/t", "a3").await,
        ok
    );
    assert_eq!(scada.publish_packet().await.payload.as_ref(), b"a3");
    assert_eq!(denied(&running, "deliver"), 2);

    // SCADA → cell A commands go through their conduit.
    let mut cmd = plant.cell(addr, "cell-a", "press-02").await;
    assert_eq!(
        suback(&mut cmd, "plant1/cell-a/press-02/cmd/#").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        publish_reason(&mut scada, "plant1/cell-a/press-02/cmd/start", "go").await,
        ok
    );
    assert_eq!(cmd.publish_packet().await.payload.as_ref(), b"go");
    running.shutdown().await.unwrap();

    // The audit log names the withheld delivery once: subscriber, its zone, topic, why.
    let denials: Vec<String> = audit_lines(&plant)
        .into_iter()
        .filter(|l| l.contains("\"action\":\"delivery_denied\""))
        .collect();
    assert_eq!(denials.len(), 1, "{denials:?}");
    let d = &denials[0];
    assert!(d.contains("\"actor\":\"hmi-1\""), "{d}");
    assert!(d.contains("\"zone\":\"scada\""), "{d}");
    assert!(d.contains("plant1/cell-b/robot-07/telemetry/t"), "{d}");
    assert!(d.contains("published in zone cell-b"), "{d}");
}

/// The audit log as JSON lines, after checking that it verifies.
fn audit_lines(plant: &Plant) -> Vec<String> {
    use converge_security::audit::{cli_verify, export, ExportFormat, ExportOptions};
    let dir = plant.env.path("data").join("audit");
    let report = cli_verify(&dir, None).unwrap();
    assert!(report.contains("OK"), "{report}");
    let mut out = Vec::new();
    export(&dir, &ExportOptions::new(ExportFormat::Jsonl), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn placeholders_keep_each_device_to_its_own_topics() {
    let plant = Plant::new();
    let running = plant.env.start_with(|c| plant.config(c)).await;
    let addr = running.tls_addr.unwrap();
    let mut press = plant.cell(addr, "cell-a", "press-01").await;
    assert_eq!(
        publish_reason(&mut press, "plant1/cell-a/press-02/telemetry/t", "x").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        suback(&mut press, "plant1/cell-a/press-02/cmd/#").await,
        SubscribeReasonCode::NotAuthorized
    );
    assert_eq!(
        suback(&mut press, "plant1/cell-a/press-01/cmd/#").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(denied(&running, "publish"), 1);
    assert_eq!(denied(&running, "subscribe"), 1);
    press.leave().await;
    running.shutdown().await.unwrap();

    // The audit log holds the connection and both denials, with the rule that decided, and
    // verifies as intact.
    let lines = audit_lines(&plant);
    let text = lines.join("\n");
    let find = |action: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("\"action\":\"{action}\"")))
            .unwrap_or_else(|| panic!("no {action} in {text}"))
            .to_string()
    };
    assert!(find("connect").contains("cell-a.press-01"));
    assert!(find("connect").contains("\"zone\":\"cell-a\""));
    let publish = find("publish_denied");
    assert!(
        publish.contains("plant1/cell-a/press-02/telemetry/t"),
        "{publish}"
    );
    assert!(publish.contains("0x87"), "{publish}");
    assert!(find("subscribe_denied").contains("plant1/cell-a/press-02/cmd/#"));
    find("disconnect");
    find("server_started");
    find("server_stopped");
}

#[tokio::test]
async fn identity_comes_from_the_san_uri_and_binds_the_client_id() {
    let plant = Plant::new();
    let running = plant.env.start_with(|c| plant.config(c)).await;
    let addr = running.tls_addr.unwrap();
    // The CN says nothing; the SAN URI names device and zone.
    let cert = plant.cell_device("anything", "cell-b", "robot-07");
    let c = Client5::connect(plant.env.v5_as("cell-b.robot-07", &cert, addr))
        .await
        .unwrap();
    assert_eq!(
        c.connack.code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
    );
    drop(c);
    // Another device's client id is refused (0x85).
    let e = Client5::connect(plant.env.v5_as("cell-b.robot-08", &cert, addr))
        .await
        .err()
        .unwrap();
    assert!(e.contains("ClientIdentifierNotValid"), "{e}");
    // An empty client id is given the identity.
    let c = Client5::connect(plant.env.v5_as("", &cert, addr))
        .await
        .unwrap();
    assert_eq!(
        c.connack
            .properties
            .as_ref()
            .and_then(|p| p.assigned_client_identifier.clone())
            .as_deref(),
        Some("cell-b.robot-07")
    );
    // A certificate no profile accepts (a URI of an unknown zone) is refused (0x87).
    let stranger = plant.cell_device("x", "cell-z", "robot-07");
    let e = Client5::connect(plant.env.v5_as("cell-z.robot-07", &stranger, addr))
        .await
        .err()
        .unwrap();
    assert!(e.contains("NotAuthorized"), "{e}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_device_over_its_message_rate_gets_quota_exceeded() {
    let plant = Plant::new();
    let running = plant.env.start_with(|c| plant.config(c)).await;
    let addr = running.tls_addr.unwrap();
    let mut press = plant.cell(addr, "cell-a", "press-01").await;
    // Burst 5, 5 per second: 30 back-to-back messages cannot all fit.
    for i in 0..30 {
        press
            .client
            .publish(
                "plant1/cell-a/press-01/telemetry/t",
                QoS::AtLeastOnce,
                false,
                format!("{i}"),
            )
            .await
            .unwrap();
    }
    let mut reasons = Vec::new();
    while reasons.len() < 30 {
        reasons.push(
            press
                .expect("PUBACK", |p| match p {
                    Packet::PubAck(a) => Some(a.reason),
                    _ => None,
                })
                .await,
        );
    }
    let refused = reasons
        .iter()
        .filter(|r| **r == PubAckReason::QuotaExceeded)
        .count();
    assert_ne!(reasons[0], PubAckReason::QuotaExceeded, "{reasons:?}");
    assert!(refused >= 20, "{reasons:?}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn mqtt_311_refusals_are_suback_0x80() {
    let plant = Plant::new();
    let running = plant.env.start_with(|c| plant.config(c)).await;
    let addr = running.tls_addr.unwrap();
    let mut scada = Client4::connect(plant.env.v4("hmi-2", addr)).await.unwrap();
    scada
        .client
        .subscribe("plant1/other/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let ack = scada
        .expect("SUBACK", |p| match p {
            rumqttc::Packet::SubAck(s) => Some(s.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ack.return_codes, [rumqttc::SubscribeReasonCode::Failure]);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reload_tightens_rights_on_live_connections() {
    let plant = Plant::new();
    let running = plant.env.start_with(|c| plant.config(c)).await;
    let addr = running.tls_addr.unwrap();
    let mut scada = Client5::connect(plant.env.v5("hmi-1", addr)).await.unwrap();
    suback(&mut scada, "plant1/+/+/telemetry/#").await;
    suback(&mut scada, "plant1/scada/#").await;
    let mut press = plant.cell(addr, "cell-a", "press-01").await;
    let mut robot = plant.cell(addr, "cell-b", "robot-07").await;

    // A broken file changes nothing.
    std::fs::write(plant.env.path("policy.toml"), "version = 1\n[[zone]]\n").unwrap();
    assert!(running.broker.reload_policy().is_err());
    assert_eq!(
        publish_reason(&mut press, "plant1/cell-a/press-01/telemetry/t", "a").await,
        PubAckReason::Success
    );
    assert_eq!(scada.publish_packet().await.payload.as_ref(), b"a");

    // Cell A loses its devices; SCADA loses its telemetry subscription right.
    std::fs::write(
        plant.env.path("policy.toml"),
        policy(r#"["cell-b"]"#, r#"["plant1/scada/#"]"#),
    )
    .unwrap();
    let summary = running.broker.reload_policy().unwrap();
    assert_eq!(
        (
            summary.kept,
            summary.disconnected,
            summary.subscriptions_removed
        ),
        (2, 1, 1)
    );
    let (_, error) = press.closed().await;
    assert!(error.contains("NotAuthorized"), "{error}");
    // Cell B's device keeps its connection; nobody is subscribed any more (SCADA's telemetry
    // subscription is gone); SCADA keeps its connection and its other rights.
    assert_eq!(
        publish_reason(&mut robot, "plant1/cell-b/robot-07/telemetry/t", "b").await,
        PubAckReason::NoMatchingSubscribers
    );
    assert_eq!(
        publish_reason(&mut scada, "plant1/scada/hmi-1/state", "up").await,
        PubAckReason::Success
    );
    assert_eq!(scada.publish_packet().await.payload.as_ref(), b"up");
    // The new policy decides new connections too.
    let e = Client5::connect(plant.env.v5_as(
        "cell-a.press-01",
        &plant.cell_device("press-01", "cell-a", "press-01"),
        addr,
    ))
    .await
    .err()
    .unwrap();
    assert!(e.contains("NotAuthorized"), "{e}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_a_policy_the_plain_listener_has_no_identity() {
    let plant = Plant::new();
    let running = plant.env.start_plain(|c| plant.config(c)).await;
    let addr = running.tcp_addr.unwrap();
    let o = rumqttc::v5::MqttOptions::new("anon", "127.0.0.1", addr.port());
    let e = Client5::connect(o).await.err().unwrap();
    assert!(e.contains("NotAuthorized"), "{e}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn wills_and_announced_limits_follow_the_profile() {
    use rumqttc::v5::mqttbytes::v5::LastWill;
    let plant = Plant::new();
    let running = plant.env.start_with(|c| plant.config(c)).await;
    let addr = running.tls_addr.unwrap();
    let connect_with_will = |topic: &str, qos: QoS| {
        let cert = plant.cell_device("press-01", "cell-a", "press-01");
        let mut o = plant.env.v5_as("cell-a.press-01", &cert, addr);
        o.set_last_will(LastWill::new(topic, "gone", qos, false, None));
        Client5::connect(o)
    };

    // A will is a publish made in advance: on another device's topic it is refused at CONNECT,
    // and so is a will above the profile's maximum QoS.
    let err = connect_with_will("plant1/cell-a/press-02/telemetry/lwt", QoS::AtLeastOnce)
        .await
        .err()
        .expect("foreign will refused");
    assert!(err.contains("NotAuthorized"), "{err}");
    let err = connect_with_will("plant1/cell-a/press-01/telemetry/lwt", QoS::ExactlyOnce)
        .await
        .err()
        .expect("QoS 2 will refused");
    assert!(err.contains("QoSNotSupported"), "{err}");

    // An allowed will goes out in the device's zone, so it reaches SCADA through the conduit.
    let mut scada = Client5::connect(plant.env.v5("scada-01", addr))
        .await
        .unwrap();
    scada
        .subscribe("plant1/+/+/telemetry/#", QoS::AtLeastOnce)
        .await;
    let mut device = connect_with_will("plant1/cell-a/press-01/telemetry/lwt", QoS::AtLeastOnce)
        .await
        .unwrap();
    // The profile's limits are announced (MQTT-3.2.2-9, -12): QoS 1 at most, no retain.
    let props = device.connack.properties.clone().unwrap();
    assert_eq!(props.max_qos, Some(1));
    assert_eq!(props.retain_available, Some(0));
    // Above the announced maximum QoS: DISCONNECT 0x9B, a reason PUBACK cannot carry.
    device
        .client
        .publish(
            "plant1/cell-a/press-01/telemetry/t",
            QoS::ExactlyOnce,
            false,
            "x",
        )
        .await
        .unwrap();
    let (_, error) = device.closed().await;
    assert!(error.contains("QoSNotSupported"), "{error}");
    // A server-initiated close is abnormal: the will is published.
    let will = scada.publish_packet().await;
    assert_eq!(&will.topic[..], b"plant1/cell-a/press-01/telemetry/lwt");
    assert_eq!(&will.payload[..], b"gone");
    drop(scada);
    running.shutdown().await.unwrap();
}
