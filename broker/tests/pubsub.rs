//! Publish/subscribe semantics over mutual TLS with rumqttc (MQTT 5 and 3.1.1).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Client4, Client5, Env};
use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, PublishProperties, RetainForwardRule, SubscribeProperties,
};
use rumqttc::v5::mqttbytes::QoS;

#[tokio::test]
async fn qos_0_1_2_round_trip_with_wildcards() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let mut sub = Client5::connect(env.v5("sub", addr)).await.unwrap();
    sub.subscribe("plant/+/temp", QoS::ExactlyOnce).await;
    sub.subscribe("plant/line2/#", QoS::ExactlyOnce).await;
    let publ = Client5::connect(env.v5("pub", addr)).await.unwrap();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.client
            .publish("plant/line1/temp", qos, false, format!("m{i}"))
            .await
            .unwrap();
        let p = sub.publish_packet().await;
        assert_eq!(&p.topic[..], b"plant/line1/temp");
        assert_eq!(p.payload, Bytes::from(format!("m{i}")));
        assert_eq!(p.qos, qos);
    }
    publ.client
        .publish("plant/line2/a/b", QoS::AtLeastOnce, false, "deep")
        .await
        .unwrap();
    let p = sub.publish_packet().await;
    assert_eq!(&p.topic[..], b"plant/line2/a/b");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn v311_and_v5_clients_interoperate() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let mut sub4 = Client4::connect(env.v4("old-plc", addr)).await.unwrap();
    sub4.subscribe("cell/#", rumqttc::QoS::AtLeastOnce).await;
    let publ = Client5::connect(env.v5("new-gw", addr)).await.unwrap();
    let props = PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    publ.client
        .publish_with_properties("cell/a", QoS::ExactlyOnce, false, "x", props)
        .await
        .unwrap();
    let p = sub4.publish_packet().await;
    assert_eq!(p.topic, "cell/a");
    assert_eq!(
        p.qos,
        rumqttc::QoS::AtLeastOnce,
        "delivered at min(publish, granted)"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn retained_messages_are_sent_on_subscribe_and_cleared_by_empty_payload() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let mut publ = Client5::connect(env.v5("pub", addr)).await.unwrap();
    publ.client
        .publish("state/valve", QoS::AtLeastOnce, true, "open")
        .await
        .unwrap();
    publ.puback().await;
    let mut sub = Client5::connect(env.v5("sub", addr)).await.unwrap();
    sub.subscribe("state/#", QoS::AtLeastOnce).await;
    let p = sub.publish_packet().await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"open");
    // A live copy of a retained publish has RETAIN=0 unless retain-as-published.
    publ.client
        .publish("state/valve", QoS::AtLeastOnce, true, "closed")
        .await
        .unwrap();
    let p = sub.publish_packet().await;
    assert!(!p.retain);
    publ.client
        .publish("state/valve", QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    let _ = sub.publish_packet().await;
    let mut late = Client5::connect(env.v5("late", addr)).await.unwrap();
    late.subscribe("state/#", QoS::AtLeastOnce).await;
    publ.client
        .publish("state/marker", QoS::AtLeastOnce, false, "m")
        .await
        .unwrap();
    let p = late.publish_packet().await;
    assert_eq!(
        &p.topic[..],
        b"state/marker",
        "the cleared retained message is not sent"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn retain_handling_and_retain_as_published() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let mut publ = Client5::connect(env.v5("pub", addr)).await.unwrap();
    publ.client
        .publish("r/x", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    publ.puback().await;
    let mut sub = Client5::connect(env.v5("sub", addr)).await.unwrap();
    let mut f = Filter::new("r/#", QoS::AtLeastOnce);
    f.retain_forward_rule = RetainForwardRule::Never;
    f.preserve_retain = true;
    sub.client.subscribe_many(vec![f]).await.unwrap();
    sub.suback().await;
    publ.client
        .publish("r/x", QoS::AtLeastOnce, true, "live")
        .await
        .unwrap();
    let p = sub.publish_packet().await;
    assert_eq!(
        &p.payload[..],
        b"live",
        "retain handling 2 sends no retained message"
    );
    assert!(p.retain, "retain-as-published keeps the flag");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn will_is_published_on_abnormal_close_and_after_its_delay() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let mut watcher = Client5::connect(env.v5("watcher", addr)).await.unwrap();
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let mut o = env.v5("dies", addr);
    o.set_last_will(LastWill::new(
        "wills/dies",
        "gone",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let dying = Client5::connect(o).await.unwrap();
    drop(dying); // aborts the event loop task: the socket closes without DISCONNECT
    let p = watcher.publish_packet().await;
    assert_eq!(&p.payload[..], b"gone");

    // Will delay 1 s with a session that outlives it: published after the delay.
    let mut o = env.v5("delayed", addr);
    o.set_session_expiry_interval(Some(60));
    let props = rumqttc::v5::mqttbytes::v5::LastWillProperties {
        delay_interval: Some(1),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
    };
    o.set_last_will(LastWill::new(
        "wills/delayed",
        "late",
        QoS::AtLeastOnce,
        false,
        Some(props),
    ));
    let started = tokio::time::Instant::now();
    drop(Client5::connect(o).await.unwrap());
    let p = watcher.publish_packet().await;
    assert_eq!(&p.payload[..], b"late");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "will delay honoured"
    );

    // A clean DISCONNECT discards the will.
    let mut o = env.v5("polite", addr);
    o.set_last_will(LastWill::new(
        "wills/polite",
        "no",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let polite = Client5::connect(o).await.unwrap();
    polite.client.disconnect().await.unwrap();
    let publ = Client5::connect(env.v5("marker", addr)).await.unwrap();
    publ.client
        .publish("wills/marker", QoS::AtLeastOnce, false, "m")
        .await
        .unwrap();
    let p = watcher.publish_packet().await;
    assert_eq!(
        &p.topic[..],
        b"wills/marker",
        "no will after a normal DISCONNECT"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn session_resumes_after_reconnect_with_queued_messages() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let o = env.v5_persistent("offline", addr, 3600);
    let mut c = Client5::connect(o.clone()).await.unwrap();
    assert!(!c.connack.session_present);
    c.subscribe("q/#", QoS::AtLeastOnce).await;
    c.leave().await;
    let mut publ = Client5::connect(env.v5("pub", addr)).await.unwrap();
    for i in 0..5 {
        publ.client
            .publish("q/x", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    for _ in 0..5 {
        publ.puback().await;
    }
    let mut c = Client5::connect(o).await.unwrap();
    assert!(c.connack.session_present);
    for i in 0..5 {
        let p = c.publish_packet().await;
        assert_eq!(p.payload, Bytes::from(format!("{i}")));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn session_and_retained_survive_a_server_restart() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let o = env.v5_persistent("persist", addr, 3600);
    let mut c = Client5::connect(o).await.unwrap();
    c.subscribe("p/#", QoS::ExactlyOnce).await;
    c.leave().await;
    let mut publ = Client5::connect(env.v5("pub", addr)).await.unwrap();
    publ.client
        .publish("p/1", QoS::ExactlyOnce, true, "one")
        .await
        .unwrap();
    publ.expect("PUBREC", |p| {
        matches!(p, rumqttc::v5::mqttbytes::v5::Packet::PubRec(_)).then_some(())
    })
    .await;
    drop(publ);
    server.shutdown().await.unwrap();

    let server = env.start().await;
    assert_eq!(server.restored.sessions, 1);
    let addr = server.tls_addr.unwrap();
    let o = env.v5_persistent("persist", addr, 3600);
    let mut c = Client5::connect(o).await.unwrap();
    assert!(c.connack.session_present);
    let p = c.publish_packet().await;
    assert_eq!(&p.payload[..], b"one");
    assert_eq!(p.qos, QoS::ExactlyOnce);
    // The subscription itself came back too.
    let publ = Client5::connect(env.v5("pub2", addr)).await.unwrap();
    publ.client
        .publish("p/2", QoS::AtLeastOnce, false, "two")
        .await
        .unwrap();
    let p = c.publish_packet().await;
    assert_eq!(&p.payload[..], b"two");
    // And the retained message.
    let mut fresh = Client5::connect(env.v5("fresh", addr)).await.unwrap();
    fresh.subscribe("p/1", QoS::AtMostOnce).await;
    let p = fresh.publish_packet().await;
    assert_eq!(&p.payload[..], b"one");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shared_subscription_spreads_messages_over_members() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let mut a = Client5::connect(env.v5("worker-a", addr)).await.unwrap();
    let mut b = Client5::connect(env.v5("worker-b", addr)).await.unwrap();
    a.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await;
    b.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await;
    let publ = Client5::connect(env.v5("pub", addr)).await.unwrap();
    for i in 0..10 {
        publ.client
            .publish("jobs/x", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(a.publish_packet().await.payload);
        got.push(b.publish_packet().await.payload);
    }
    got.sort();
    let mut want: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("{i}"))).collect();
    want.sort();
    assert_eq!(got, want, "each message to exactly one member, evenly");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn same_client_id_takes_the_session_over() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let mut first = Client5::connect(env.v5("dup", addr)).await.unwrap();
    let _second = Client5::connect(env.v5("dup", addr)).await.unwrap();
    // rumqttc reports the server's DISCONNECT as the error that ends its event loop.
    let (_, error) = first.closed().await;
    assert!(error.contains("SessionTakenOver"), "{error}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscription_identifiers_and_overlapping_subscriptions() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let mut sub = Client5::connect(env.v5("sub", addr)).await.unwrap();
    for (filter, id, qos) in [("s/+", 1, QoS::AtMostOnce), ("s/#", 2, QoS::ExactlyOnce)] {
        let props = SubscribeProperties {
            id: Some(id),
            user_properties: vec![],
        };
        sub.client
            .subscribe_with_properties(filter, qos, props)
            .await
            .unwrap();
        sub.suback().await;
    }
    let publ = Client5::connect(env.v5("pub", addr)).await.unwrap();
    publ.client
        .publish("s/x", QoS::ExactlyOnce, false, "one copy")
        .await
        .unwrap();
    let p = sub.publish_packet().await;
    assert_eq!(p.qos, QoS::ExactlyOnce, "highest granted QoS");
    let mut ids = p.properties.unwrap().subscription_identifiers;
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
    publ.client
        .publish("s/y", QoS::AtMostOnce, false, "next")
        .await
        .unwrap();
    let p = sub.publish_packet().await;
    assert_eq!(
        &p.payload[..],
        b"next",
        "exactly one copy of the first message"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn message_expiry_is_forwarded_and_enforced() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let o = env.v5_persistent("slowpoke", addr, 600);
    let mut c = Client5::connect(o.clone()).await.unwrap();
    c.subscribe("e/#", QoS::AtLeastOnce).await;
    c.leave().await;
    let mut publ = Client5::connect(env.v5("pub", addr)).await.unwrap();
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    let long = PublishProperties {
        message_expiry_interval: Some(100),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("e/short", QoS::AtLeastOnce, false, "s", short)
        .await
        .unwrap();
    publ.client
        .publish_with_properties("e/long", QoS::AtLeastOnce, false, "l", long)
        .await
        .unwrap();
    for _ in 0..2 {
        publ.puback().await;
    }
    // Let the short one expire while the subscriber is away: move the broker's clock on.
    server.broker.clock.advance(Duration::from_secs(2));
    let mut c = Client5::connect(o).await.unwrap();
    let p = c.publish_packet().await;
    assert_eq!(
        &p.topic[..],
        b"e/long",
        "the expired message is not delivered"
    );
    let left = p.properties.unwrap().message_expiry_interval.unwrap();
    assert!(
        (95..=98).contains(&left),
        "remaining interval forwarded: {left}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn topic_aliases_in_both_directions() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let mut o = env.v5("aliased", addr);
    o.set_topic_alias_max(Some(5));
    let mut sub = Client5::connect(o).await.unwrap();
    sub.subscribe("alias/#", QoS::AtMostOnce).await;
    let publ = Client5::connect(env.v5("pub", addr)).await.unwrap();
    // Client -> server: alias 3 set with the topic, then used alone.
    let with_alias = PublishProperties {
        topic_alias: Some(3),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("alias/t", QoS::AtMostOnce, false, "1", with_alias.clone())
        .await
        .unwrap();
    publ.client
        .publish_with_properties("", QoS::AtMostOnce, false, "2", with_alias)
        .await
        .unwrap();
    let first = sub.publish_packet().await;
    let second = sub.publish_packet().await;
    assert_eq!(&first.payload[..], b"1");
    assert_eq!(&second.payload[..], b"2");
    // Server -> client: the first copy establishes an alias, the second uses it.
    let a1 = first
        .properties
        .and_then(|p| p.topic_alias)
        .expect("server assigns an alias");
    assert_eq!(&first.topic[..], b"alias/t");
    assert_eq!(second.properties.and_then(|p| p.topic_alias), Some(a1));
    assert!(
        second.topic.is_empty(),
        "topic left out once the alias is known"
    );
    server.shutdown().await.unwrap();
}
