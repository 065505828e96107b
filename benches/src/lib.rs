//! Benchmarks live in benches/benches/; the load tools in src/bin/ share the MQTT stream helpers
//! below (rumqttc's codec, not ours, so the tools measure our broker with an independent client).

pub mod mqtt_stream;
