//! The little DER the CA writes itself: the certificatePolicies extension
//! value (rcgen has no type for it), plus hex for serial numbers.
//!
//! Profiles select certificates by policy OID (`policy_oid`, or
//! `zone = { policy_oid = … }`), so the CA must be able to put one in.

use super::CaError;

/// OID of the certificatePolicies extension (RFC 5280 §4.2.1.4).
pub(crate) const CERTIFICATE_POLICIES: [u64; 4] = [2, 5, 29, 32];

/// DER of `certificatePolicies ::= SEQUENCE OF PolicyInformation`, each with
/// only its policy identifier (no qualifiers).
pub(crate) fn certificate_policies(oids: &[String]) -> Result<Vec<u8>, CaError> {
    let mut infos = Vec::new();
    for oid in oids {
        let body = oid_body(oid).ok_or_else(|| CaError::BadValue {
            kind: "policy OID",
            value: oid.clone(),
            why: "not a dotted OID such as 1.3.6.1.4.1.55555.1.1",
        })?;
        infos.extend(tlv(0x30, &tlv(0x06, &body)));
    }
    Ok(tlv(0x30, &infos))
}

/// The content octets of an OBJECT IDENTIFIER, or `None` if `dotted` is not
/// a valid OID (at least two arcs, first 0–2, second below 40 under 0 and 1).
pub(crate) fn oid_body(dotted: &str) -> Option<Vec<u8>> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| {
            // No signs, no empty arcs, no leading zeros ("01").
            let canonical = !a.is_empty() && (a == "0" || !a.starts_with('0'));
            if canonical && a.bytes().all(|b| b.is_ascii_digit()) {
                a.parse().ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    let (&first, rest) = arcs.split_first()?;
    let (&second, rest) = rest.split_first()?;
    if first > 2 || (first < 2 && second >= 40) {
        return None;
    }
    let mut out = Vec::new();
    base128(&mut out, first.checked_mul(40)?.checked_add(second)?);
    for &arc in rest {
        base128(&mut out, arc);
    }
    Some(out)
}

/// Lower-case hex to bytes; `None` on odd length or a non-hex digit.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

fn base128(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = vec![(v & 0x7f) as u8];
    v >>= 7;
    while v > 0 {
        tmp.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    tmp.reverse();
    out.extend(tmp);
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn oids() {
        // 1.2.840.113549 is the classic example: 2a 86 48 86 f7 0d.
        assert_eq!(
            oid_body("1.2.840.113549").unwrap(),
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]
        );
        assert_eq!(oid_body("2.5.29.32").unwrap(), [0x55, 0x1d, 0x20]);
        for bad in [
            "",
            "1",
            "3.1",
            "1.40",
            "1..2",
            "1.2.a",
            "1.-2",
            "1.02",
            "1.2.99999999999999999999",
        ] {
            assert!(oid_body(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn policies_encoding() {
        // anyPolicy (2.5.29.32.0): SEQUENCE { SEQUENCE { OID } }.
        let der = certificate_policies(&["2.5.29.32.0".to_owned()]).unwrap();
        assert_eq!(
            der,
            [0x30, 0x08, 0x30, 0x06, 0x06, 0x04, 0x55, 0x1d, 0x20, 0x00]
        );
        assert!(matches!(
            certificate_policies(&["1.x".to_owned()]),
            Err(CaError::BadValue { .. })
        ));
    }

    #[test]
    fn long_lengths() {
        let body = vec![0u8; 300];
        let t = tlv(0x04, &body);
        assert_eq!(&t[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(t.len(), 304);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex("00ff7f").unwrap(), [0, 255, 127]);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
