//! Helpers shared by the ca_* tests: a plant CA in a tempdir, the example
//! policy, PEM and file-mode helpers.

#![allow(dead_code)]

use std::path::Path;

use converge_security::ca::{Ca, InitOptions};
use converge_security::{compile, CompiledPolicy};

/// The CA the plant example's `plant1-device-ca` names.
pub fn device_ca_options() -> InitOptions {
    InitOptions {
        name: "Plant1 Device CA".to_owned(),
        organization: Some("ACME Plant1".to_owned()),
        urn_namespace: Some("plant1".to_owned()),
        ..InitOptions::default()
    }
}

pub fn device_ca(dir: &Path) -> Ca {
    Ca::init(&dir.join("ca"), &device_ca_options()).unwrap()
}

pub fn plant() -> CompiledPolicy {
    compile(include_str!("../../examples/plant.toml"), "plant.toml").unwrap()
}

/// DER of the first PEM block.
pub fn pem_der(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    pem.contents
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
