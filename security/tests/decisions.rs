//! Table-driven decision tests on the example plant policy
//! (examples/plant.toml): CONNECT, PUBLISH, SUBSCRIBE and delivery, each
//! checked for verdict, MQTT 5 reason code and the rule that decided.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use converge_security::policy::reason::*;
use converge_security::{
    compile, evaluate, resolve, CertAttributes, CompiledPolicy, Request, Subject, Transport,
};

const DEVICE_CA: &[(&str, &str)] = &[("CN", "Plant1 Device CA"), ("O", "ACME Plant1")];
const OT_CA: &[(&str, &str)] = &[("O", "ACME Plant1"), ("CN", "Plant1 OT Systems CA")];
const ENTERPRISE_CA: &[(&str, &str)] = &[("CN", "ACME Enterprise CA"), ("O", "ACME")];
const CELL_DEVICE_OID: &str = "1.3.6.1.4.1.55555.1.1";
const SCADA_OID: &str = "1.3.6.1.4.1.55555.1.2";
const HISTORIAN_OID: &str = "1.3.6.1.4.1.55555.1.3";

/// 2026-01-01; the test certificates are valid 1970..2100.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn plant() -> CompiledPolicy {
    compile(include_str!("../examples/plant.toml"), "plant.toml").unwrap()
}

fn cert(issuer: &[(&str, &str)], oid: Option<&str>) -> CertAttributes {
    let mut c = CertAttributes::default();
    c.issuer = issuer
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    c.policy_oids = oid.into_iter().map(str::to_owned).collect();
    c.not_before = 0;
    c.not_after = 4_102_444_800;
    c
}

fn cell_device(zone: &str, device: &str) -> CertAttributes {
    let mut c = cert(DEVICE_CA, Some(CELL_DEVICE_OID));
    c.common_names = vec![format!("{device}.{zone}")];
    c.san_uris = vec![format!("urn:dev:plant1:{zone}:{device}")];
    c
}

fn named(issuer: &[(&str, &str)], oid: Option<&str>, cn: &str, ou: &str) -> CertAttributes {
    let mut c = cert(issuer, oid);
    c.common_names = vec![cn.to_owned()];
    c.organizational_units = vec![ou.to_owned()];
    c
}

struct Plant {
    policy: CompiledPolicy,
    press_a1: Subject,
    press_a2: Subject,
    press_b1: Subject,
    scada: Subject,
    historian: Subject,
    mes: Subject,
}

fn subjects() -> Plant {
    let policy = plant();
    let r = |c: &CertAttributes, id: &str| resolve(&policy, c, id).unwrap();
    Plant {
        press_a1: r(&cell_device("cell-a", "press-01"), "cell-a.press-01"),
        press_a2: r(&cell_device("cell-a", "press-02"), "cell-a.press-02"),
        press_b1: r(&cell_device("cell-b", "press-01"), "cell-b.press-01"),
        scada: r(
            &named(OT_CA, Some(SCADA_OID), "scada-01", "ops"),
            "scada-01",
        ),
        historian: r(
            &named(OT_CA, Some(HISTORIAN_OID), "historian-01", "it"),
            "historian-01",
        ),
        mes: r(&named(ENTERPRISE_CA, None, "mes", "enterprise"), "mes"),
        policy,
    }
}

/// Runs a table; every row is (who, request, allowed, reason code, rule as described).
fn run(p: &Plant, rows: &[(&Subject, Request<'_>, bool, u8, &str)]) {
    let mut failures = Vec::new();
    for (i, (who, req, allowed, code, rule)) in rows.iter().enumerate() {
        let d = evaluate(&p.policy, who, req, now());
        let got = (
            d.is_allowed(),
            d.reason_code(),
            p.policy.describe(d.rule()).to_string(),
        );
        if got != (*allowed, *code, (*rule).to_owned()) {
            failures.push(format!(
                "row {i}: {} {req:?}\n   got {got:?}\n  want {:?}",
                who.identity(),
                (allowed, code, rule)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn publish(topic: &str, qos: u8, retain: bool, payload_len: usize) -> Request<'_> {
    Request::Publish {
        topic,
        qos,
        retain,
        payload_len,
    }
}

fn subscribe(filter: &str, qos: u8, active_subscriptions: u32) -> Request<'_> {
    Request::Subscribe {
        filter,
        qos,
        active_subscriptions,
    }
}

fn deliver<'a>(topic: &'a str, publisher_zone: &'a str, qos: u8, len: usize) -> Request<'a> {
    Request::Deliver {
        topic,
        publisher_zone,
        qos,
        payload_len: len,
    }
}

const DEVICE_TELEMETRY: &str =
    "profile \"cell-device\" publish[0] \"plant1/${zone}/${device}/telemetry/#\"";
const NO_RIGHT: &str = "default deny: no right of the profile matches";
const NO_CONDUIT: &str = "default deny: no conduit carries the topic";

#[test]
fn publish_table() {
    let p = subjects();
    let (a1, b1, scada, hist, mes) = (&p.press_a1, &p.press_b1, &p.scada, &p.historian, &p.mes);
    run(
        &p,
        &[
            // Own topics.
            (
                a1,
                publish("plant1/cell-a/press-01/telemetry/temp", 1, false, 100),
                true,
                SUCCESS,
                DEVICE_TELEMETRY,
            ),
            (
                b1,
                publish("plant1/cell-b/press-01/telemetry/temp", 0, false, 100),
                true,
                SUCCESS,
                DEVICE_TELEMETRY,
            ),
            (
                a1,
                publish("plant1/cell-a/press-01/state", 1, true, 10),
                true,
                SUCCESS,
                "profile \"cell-device\" publish[2] \"plant1/${zone}/${device}/state\"",
            ),
            // Placeholders: device A cannot publish under device B's topics,
            // nor a same-named device in another cell.
            (
                a1,
                publish("plant1/cell-a/press-02/telemetry/temp", 1, false, 100),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
            (
                a1,
                publish("plant1/cell-b/press-01/telemetry/temp", 1, false, 100),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
            (
                a1,
                publish("plant1/cell-a/press-01/cmd/start", 1, false, 100),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
            // Max QoS, retain, payload size.
            (
                a1,
                publish("plant1/cell-a/press-01/telemetry/temp", 2, false, 100),
                false,
                QOS_NOT_SUPPORTED,
                "profile \"cell-device\" max_qos",
            ),
            (
                mes,
                publish("acme/enterprise/mes/orders", 1, true, 100),
                false,
                RETAIN_NOT_SUPPORTED,
                "profile \"enterprise-app\" retain",
            ),
            (
                a1,
                publish("plant1/cell-a/press-01/telemetry/temp", 1, false, 16_384),
                true,
                SUCCESS,
                DEVICE_TELEMETRY,
            ),
            (
                a1,
                publish("plant1/cell-a/press-01/telemetry/temp", 1, false, 16_385),
                false,
                PACKET_TOO_LARGE,
                "profile \"cell-device\" max_payload",
            ),
            // Malformed topic.
            (
                a1,
                publish("plant1/cell-a/+/telemetry", 0, false, 1),
                false,
                TOPIC_NAME_INVALID,
                "malformed topic",
            ),
            // SCADA writes commands into a cell through a conduit.
            (
                scada,
                publish("plant1/cell-a/press-01/cmd/start", 2, false, 64),
                true,
                SUCCESS,
                "conduit \"scada-to-cell-a\" topics[0] \"plant1/cell-a/+/cmd/#\"",
            ),
            (
                scada,
                publish("plant1/cell-b/broadcast/shift-change", 1, false, 64),
                true,
                SUCCESS,
                "conduit \"scada-to-cell-b\" topics[1] \"plant1/cell-b/broadcast/#\"",
            ),
            // …within the conduit's size limit (the profile alone would allow it).
            (
                scada,
                publish("plant1/cell-a/press-01/cmd/recipe", 1, false, 5_000),
                false,
                PACKET_TOO_LARGE,
                "conduit \"scada-to-cell-a\" max_payload",
            ),
            (
                scada,
                publish("plant1/scada/kpi/oee", 1, true, 64),
                true,
                SUCCESS,
                "profile \"scada-server\" publish[1] \"plant1/scada/kpi/#\"",
            ),
            (
                scada,
                publish("plant1/dmz/historian-01/reports/x", 1, false, 64),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
            (
                hist,
                publish("plant1/dmz/historian-01/reports/daily", 1, true, 500_000),
                true,
                SUCCESS,
                "profile \"historian\" publish[0] \"plant1/dmz/${device}/#\"",
            ),
            (
                mes,
                publish("acme/enterprise/mes/orders", 1, false, 100),
                true,
                SUCCESS,
                "profile \"enterprise-app\" publish[0] \"acme/enterprise/${device}/#\"",
            ),
            (
                mes,
                publish("plant1/cell-a/press-01/cmd/start", 1, false, 100),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
        ],
    );
}

#[test]
fn subscribe_table() {
    let p = subjects();
    let (a1, scada, hist, mes) = (&p.press_a1, &p.scada, &p.historian, &p.mes);
    let own_cmd = "profile \"cell-device\" subscribe[0] \"plant1/${zone}/${device}/cmd/#\"";
    run(
        &p,
        &[
            (
                a1,
                subscribe("plant1/cell-a/press-01/cmd/#", 1, 0),
                true,
                GRANTED_QOS_1,
                own_cmd,
            ),
            (
                a1,
                subscribe("plant1/cell-a/press-01/cmd/start", 0, 0),
                true,
                GRANTED_QOS_0,
                own_cmd,
            ),
            (
                a1,
                subscribe("$share/g1/plant1/cell-a/press-01/cmd/#", 1, 0),
                true,
                GRANTED_QOS_1,
                own_cmd,
            ),
            // Max QoS 1: a QoS 2 request is granted QoS 1 (MQTT-3.9.3).
            (
                a1,
                subscribe("plant1/cell-a/broadcast/#", 2, 0),
                true,
                GRANTED_QOS_1,
                "profile \"cell-device\" subscribe[1] \"plant1/${zone}/broadcast/#\"",
            ),
            // Another device's commands, wider filters, other cells.
            (
                a1,
                subscribe("plant1/cell-a/press-02/cmd/#", 1, 0),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
            (
                a1,
                subscribe("plant1/cell-a/+/cmd/#", 1, 0),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
            (
                a1,
                subscribe("plant1/cell-a/#", 1, 0),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
            (a1, subscribe("#", 0, 0), false, NOT_AUTHORIZED, NO_RIGHT),
            (
                a1,
                subscribe("plant1/cell-b/press-01/cmd/#", 1, 0),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
            // Subscription count: 8 allowed.
            (
                a1,
                subscribe("plant1/cell-a/press-01/cmd/#", 1, 7),
                true,
                GRANTED_QOS_1,
                own_cmd,
            ),
            (
                a1,
                subscribe("plant1/cell-a/press-01/cmd/#", 1, 8),
                false,
                QUOTA_EXCEEDED,
                "profile \"cell-device\" max_subscriptions",
            ),
            // Malformed filters.
            (
                a1,
                subscribe("plant1/#/cmd", 1, 0),
                false,
                TOPIC_FILTER_INVALID,
                "malformed topic",
            ),
            (
                a1,
                subscribe("$share/plant1", 1, 0),
                false,
                TOPIC_FILTER_INVALID,
                "malformed topic",
            ),
            (
                scada,
                subscribe("plant1/+/+/telemetry/#", 2, 0),
                true,
                GRANTED_QOS_2,
                "profile \"scada-server\" subscribe[0] \"plant1/+/+/telemetry/#\"",
            ),
            (
                scada,
                subscribe("plant1/cell-b/+/alarm/#", 1, 0),
                true,
                GRANTED_QOS_1,
                "profile \"scada-server\" subscribe[1] \"plant1/+/+/alarm/#\"",
            ),
            (scada, subscribe("#", 1, 0), false, NOT_AUTHORIZED, NO_RIGHT),
            (
                hist,
                subscribe("plant1/cell-a/+/telemetry/#", 1, 0),
                true,
                GRANTED_QOS_1,
                "profile \"historian\" subscribe[0] \"plant1/+/+/telemetry/#\"",
            ),
            (
                hist,
                subscribe("plant1/cell-a/+/cmd/#", 1, 0),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
            (
                mes,
                subscribe("plant1/dmz/historian-01/reports/#", 1, 0),
                true,
                GRANTED_QOS_1,
                "profile \"enterprise-app\" subscribe[0] \"plant1/dmz/+/reports/#\"",
            ),
            (
                mes,
                subscribe("plant1/+/+/telemetry/#", 1, 0),
                false,
                NOT_AUTHORIZED,
                NO_RIGHT,
            ),
        ],
    );
}

#[test]
fn deliver_table() {
    let p = subjects();
    let (a1, a2, b1, scada, hist, mes) = (
        &p.press_a1,
        &p.press_a2,
        &p.press_b1,
        &p.scada,
        &p.historian,
        &p.mes,
    );
    let telemetry = "plant1/cell-a/press-01/telemetry/temp";
    run(
        &p,
        &[
            // Same zone: no conduit needed.
            (
                a2,
                deliver("plant1/cell-a/broadcast/x", "cell-a", 1, 10),
                true,
                GRANTED_QOS_1,
                "zone \"cell-a\" (same-zone traffic)",
            ),
            // Cross-zone with a conduit…
            (
                scada,
                deliver(telemetry, "cell-a", 1, 100),
                true,
                GRANTED_QOS_1,
                "conduit \"cell-a-to-scada\" topics[0] \"plant1/cell-a/+/telemetry/#\"",
            ),
            (
                hist,
                deliver(telemetry, "cell-a", 1, 100),
                true,
                GRANTED_QOS_1,
                "conduit \"cell-a-to-dmz\" topics[0] \"plant1/cell-a/+/telemetry/#\"",
            ),
            // …which caps QoS by downgrading, not refusing.
            (
                hist,
                deliver(telemetry, "cell-a", 2, 100),
                true,
                GRANTED_QOS_1,
                "conduit \"cell-a-to-dmz\" topics[0] \"plant1/cell-a/+/telemetry/#\"",
            ),
            (
                a1,
                deliver("plant1/cell-a/press-01/cmd/start", "scada", 2, 64),
                true,
                GRANTED_QOS_2,
                "conduit \"scada-to-cell-a\" topics[0] \"plant1/cell-a/+/cmd/#\"",
            ),
            (
                a1,
                deliver("plant1/cell-a/press-01/cmd/recipe", "scada", 1, 4_097),
                false,
                PACKET_TOO_LARGE,
                "conduit \"scada-to-cell-a\" max_payload",
            ),
            // …and without one.
            (
                mes,
                deliver(telemetry, "cell-a", 1, 100),
                false,
                NOT_AUTHORIZED,
                NO_CONDUIT,
            ),
            (
                b1,
                deliver(telemetry, "cell-a", 1, 100),
                false,
                NOT_AUTHORIZED,
                NO_CONDUIT,
            ),
            (
                a1,
                deliver("plant1/cell-b/press-01/telemetry/t", "cell-b", 1, 100),
                false,
                NOT_AUTHORIZED,
                NO_CONDUIT,
            ),
            // The conduit to the DMZ carries telemetry only, not state.
            (
                hist,
                deliver("plant1/cell-a/press-01/state", "cell-a", 1, 10),
                false,
                NOT_AUTHORIZED,
                NO_CONDUIT,
            ),
            // Nothing flows from the enterprise into the plant.
            (
                scada,
                deliver("acme/enterprise/mes/orders", "enterprise", 1, 10),
                false,
                NOT_AUTHORIZED,
                NO_CONDUIT,
            ),
            (
                hist,
                deliver("plant1/scada/kpi/oee", "scada", 1, 10),
                true,
                GRANTED_QOS_1,
                "conduit \"scada-to-dmz\" topics[0] \"plant1/scada/kpi/#\"",
            ),
            (
                mes,
                deliver("plant1/dmz/historian-01/reports/daily", "dmz", 1, 10),
                true,
                GRANTED_QOS_1,
                "conduit \"dmz-to-enterprise\" topics[0] \"plant1/dmz/+/reports/#\"",
            ),
            // A zone this policy does not know (e.g. a retained message from before a reload).
            (
                scada,
                deliver(telemetry, "cell-z", 1, 10),
                false,
                NOT_AUTHORIZED,
                "default deny: unknown publisher zone",
            ),
        ],
    );
}

#[test]
fn connect_table() {
    let p = subjects();
    let connect = |client_id, listener, transport| Request::Connect {
        client_id,
        listener,
        transport,
    };
    let (a1, scada, mes) = (&p.press_a1, &p.scada, &p.mes);
    run(
        &p,
        &[
            (
                a1,
                connect("cell-a.press-01", "plant-floor", Transport::Tls),
                true,
                SUCCESS,
                "profile \"cell-device\" identity",
            ),
            (
                a1,
                connect("cell-a.press-01", "plant-floor", Transport::Quic),
                true,
                SUCCESS,
                "profile \"cell-device\" identity",
            ),
            (
                a1,
                connect("cell-a.press-01", "plant-floor", Transport::Tcp),
                false,
                NOT_AUTHORIZED,
                "profile \"cell-device\" transports",
            ),
            (
                a1,
                connect("cell-a.press-01", "plant-floor", Transport::Wss),
                false,
                NOT_AUTHORIZED,
                "profile \"cell-device\" transports",
            ),
            // Not the client id the subject was resolved with.
            (
                a1,
                connect("cell-a.press-02", "plant-floor", Transport::Tls),
                false,
                CLIENT_IDENTIFIER_NOT_VALID,
                "profile \"cell-device\" client id rule",
            ),
            (
                scada,
                connect("scada-01", "tls", Transport::Tls),
                true,
                SUCCESS,
                "profile \"scada-server\" identity",
            ),
            (
                mes,
                connect("mes", "enterprise", Transport::Wss),
                true,
                SUCCESS,
                "profile \"enterprise-app\" identity",
            ),
        ],
    );
}

#[test]
fn listeners_restrict_where_a_profile_may_connect() {
    let src = include_str!("../examples/plant.toml").replace(
        "id = \"scada-server\"\n",
        "id = \"scada-server\"\nlisteners = [\"ot\"]\n",
    );
    let policy = compile(&src, "plant.toml").unwrap();
    let c = named(OT_CA, Some(SCADA_OID), "scada-01", "ops");
    let s = resolve(&policy, &c, "scada-01").unwrap();
    let at = |listener| {
        evaluate(
            &policy,
            &s,
            &Request::Connect {
                client_id: "scada-01",
                listener,
                transport: Transport::Tls,
            },
            now(),
        )
    };
    assert!(at("ot").is_allowed());
    let d = at("tls");
    assert_eq!(d.reason_code(), NOT_AUTHORIZED);
    assert_eq!(
        policy.describe(d.rule()).to_string(),
        "profile \"scada-server\" listeners"
    );
}

#[test]
fn client_id_must_equal_identity() {
    let policy = plant();
    // Resolved with a client id that is not the identity "cell-a.press-01".
    let s = resolve(&policy, &cell_device("cell-a", "press-01"), "press-01").unwrap();
    assert_eq!(s.identity(), "cell-a.press-01");
    let d = evaluate(
        &policy,
        &s,
        &Request::Connect {
            client_id: "press-01",
            listener: "plant-floor",
            transport: Transport::Tls,
        },
        now(),
    );
    assert!(!d.is_allowed());
    assert_eq!(d.reason_code(), CLIENT_IDENTIFIER_NOT_VALID);
}

#[test]
fn danger_allow_any_client_id_lifts_the_binding() {
    let src = include_str!("../examples/plant.toml").replace(
        "identity = \"${zone}.${device}\"",
        "identity = \"${zone}.${device}\"\ndanger_allow_any_client_id = true",
    );
    let policy = compile(&src, "plant.toml").unwrap();
    let s = resolve(&policy, &cell_device("cell-a", "press-01"), "anything").unwrap();
    let d = evaluate(
        &policy,
        &s,
        &Request::Connect {
            client_id: "anything",
            listener: "plant-floor",
            transport: Transport::Tls,
        },
        now(),
    );
    assert!(d.is_allowed(), "{}", policy.describe(d.rule()));
}

#[test]
fn certificate_validity_is_checked_on_every_request() {
    let policy = plant();
    let mut c = cell_device("cell-a", "press-01");
    c.not_before = 1_000;
    c.not_after = 2_000;
    let s = resolve(&policy, &c, "cell-a.press-01").unwrap();
    let req = publish("plant1/cell-a/press-01/telemetry/t", 0, false, 1);
    let at = |secs| evaluate(&policy, &s, &req, UNIX_EPOCH + Duration::from_secs(secs));
    assert_eq!(
        policy.describe(at(999).rule()).to_string(),
        "certificate not yet valid"
    );
    assert!(at(1_000).is_allowed());
    assert!(at(2_000).is_allowed());
    let late = at(2_001);
    assert!(!late.is_allowed());
    assert_eq!(late.reason_code(), NOT_AUTHORIZED);
    assert_eq!(
        policy.describe(late.rule()).to_string(),
        "certificate expired"
    );
}

#[test]
fn a_subject_from_another_policy_is_refused() {
    let old = plant();
    let new = plant();
    let s = resolve(&old, &cell_device("cell-a", "press-01"), "cell-a.press-01").unwrap();
    let req = publish("plant1/cell-a/press-01/telemetry/t", 0, false, 1);
    assert!(evaluate(&old, &s, &req, now()).is_allowed());
    let d = evaluate(&new, &s, &req, now());
    assert!(!d.is_allowed());
    assert_eq!(
        new.describe(d.rule()).to_string(),
        "subject resolved under another policy"
    );
}

#[test]
fn topics_outside_every_zone_are_denied() {
    let policy = compile(
        r#"version = 1
[[ca]]
id = "ca"
subject = "CN=CA"
[[zone]]
id = "cell-a"
security_level = 1
trusted_cas = ["ca"]
namespace = ["plant1/cell-a/#"]
[[profile]]
id = "wide"
device = "cn"
zone = { fixed = "cell-a" }
identity = "${device}"
publish = ["plant1/#"]
"#,
        "p.toml",
    )
    .unwrap();
    let mut c = cert(&[("CN", "CA")], None);
    c.common_names = vec!["d1".into()];
    let s = resolve(&policy, &c, "d1").unwrap();
    let d = evaluate(&policy, &s, &publish("plant1/cell-a/x", 0, false, 1), now());
    assert!(d.is_allowed());
    let d = evaluate(
        &policy,
        &s,
        &publish("plant1/elsewhere/x", 0, false, 1),
        now(),
    );
    assert!(!d.is_allowed());
    assert_eq!(
        policy.describe(d.rule()).to_string(),
        "default deny: the topic is in no zone"
    );
}

#[test]
fn granted_qos_and_audit_text() {
    let p = subjects();
    let d = evaluate(
        &p.policy,
        &p.historian,
        &deliver("plant1/cell-b/press-01/telemetry/t", "cell-b", 2, 10),
        now(),
    );
    assert_eq!(d.granted_qos(), Some(1));
    let d = evaluate(
        &p.policy,
        &p.press_a1,
        &publish("plant1/cell-a/press-01/telemetry/t", 2, false, 10),
        now(),
    );
    assert_eq!(d.granted_qos(), None);
}
