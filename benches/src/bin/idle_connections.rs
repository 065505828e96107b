//! Memory per idle MQTT connection, measured on a running broker process.
//!
//! `idle_connections ADDR PID COUNT` opens COUNT plain MQTT 3.1.1 connections to ADDR (each
//! sends CONNECT with keep-alive 0 and waits for CONNACK), then reads the resident set size of
//! process PID from /proc before and after and prints the difference per connection. Any
//! broker works (Converge's plain listener, Mosquitto), so both are measured the same way.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn connect(addr: &str, id: usize) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let client_id = format!("idle-{id:06}");
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    s.write_all(&packet)?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack)?;
    if connack[0] != 0x20 || connack[3] != 0 {
        return Err(std::io::Error::other(format!("refused: {connack:02X?}")));
    }
    Ok(s)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(pid), Some(count)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: idle_connections ADDR PID COUNT");
        std::process::exit(2);
    };
    let pid: u32 = pid.parse().expect("PID");
    let count: usize = count.parse().expect("COUNT");
    // Warm up: the first connections pay for lazily allocated pools in any broker.
    let warm: Vec<TcpStream> = (0..50)
        .map(|i| connect(addr, 900_000 + i).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let started = Instant::now();
    let conns: Vec<TcpStream> = (0..count)
        .map(|i| connect(addr, i).expect("connect"))
        .collect();
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before) as f64 * 1024.0) / count as f64;
    println!(
        "{count} idle connections: RSS {before} KiB -> {after} KiB, {per:.0} bytes per connection; connected in {:.2} s",
        elapsed.as_secs_f64()
    );
    drop(conns);
    drop(warm);
}
