//! The certificate revocation list the TLS server loads.
//!
//! A v2 CRL as RFC 5280 §5 and webpki want it: signed by the CA key, issuer
//! = the CA subject, authority key identifier = the CA's subject key id,
//! a CRL number that only grows, thisUpdate = now and nextUpdate set, one
//! entry per revoked certificate with its reason code (rcgen leaves the
//! extension out for `unspecified`, as §5.3.1 asks). Expired certificates
//! stay listed: a plant CA revokes few, and a verifier with a wrong clock
//! must still see them.

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::der::unhex;
use super::{CaError, Entry};

/// Signs a CRL listing every revoked entry, valid from `now` for `days`.
pub(crate) fn build(
    issuer: &Issuer<'_, KeyPair>,
    ca_key_id: &[u8],
    entries: &[Entry],
    number: u64,
    now: OffsetDateTime,
    days: u32,
) -> Result<String, CaError> {
    let revoked_certs = entries
        .iter()
        .filter_map(|e| e.revoked.map(|r| (e, r)))
        .map(|(e, r)| {
            let serial = unhex(&e.serial).ok_or_else(|| CaError::Corrupt {
                path: super::files::INDEX_FILE.into(),
                why: format!("serial {:?} is not hex", e.serial),
            })?;
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: OffsetDateTime::from_unix_timestamp(r.at).map_err(|_| {
                    CaError::Corrupt {
                        path: super::files::INDEX_FILE.into(),
                        why: format!("revocation time {} of {} is out of range", r.at, e.serial),
                    }
                })?,
                reason_code: Some(r.reason.to_rcgen()),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, CaError>>()?;
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(i64::from(days.max(1))),
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        // The AKI must equal the CA certificate's SKI, whatever method made it.
        key_identifier_method: KeyIdMethod::PreSpecified(ca_key_id.to_vec()),
    };
    Ok(params.signed_by(issuer)?.pem()?)
}
