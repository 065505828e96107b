//! Continuation tokens: the engine's `Continuation` bytes plus the tag they
//! belong to, as URL-safe base64 without padding. Clients treat them as
//! opaque; the server checks the version, the length and that the engine
//! accepts the bytes for the request's range.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::api::error::RequestError;
use crate::query::{Continuation, CONTINUATION_LEN};

/// Token layout version.
const TOKEN_VERSION: u8 = 1;

/// Longest tag a token may carry, so a token is never long enough to
/// matter; tag names are far shorter.
pub const MAX_TOKEN_TAG_LEN: usize = 512;

/// The token for resuming `tag` at `next`.
pub fn encode(tag: &str, next: &Continuation) -> String {
    let mut bytes = Vec::with_capacity(1 + CONTINUATION_LEN + tag.len());
    bytes.push(TOKEN_VERSION);
    bytes.extend_from_slice(&next.to_bytes());
    bytes.extend_from_slice(tag.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The tag and continuation in a token; anything malformed is a 400
/// `bad_continuation`.
pub fn decode(token: &str) -> Result<(String, Continuation), RequestError> {
    let bad = |why: &str| {
        RequestError::bad(
            "bad_continuation",
            "continuation",
            format!(
                "the continuation token is invalid ({why}); send back a token exactly as received"
            ),
        )
    };
    // Base64 of the longest valid token; refuse longer input before decoding.
    if token.len() > (1 + CONTINUATION_LEN + MAX_TOKEN_TAG_LEN) * 4 / 3 + 4 {
        return Err(bad("too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("not base64url"))?;
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(bad("empty"));
    };
    if version != TOKEN_VERSION {
        return Err(bad("unknown version"));
    }
    if rest.len() < CONTINUATION_LEN {
        return Err(bad("truncated"));
    }
    let (cont, tag) = rest.split_at(CONTINUATION_LEN);
    let cont = Continuation::from_bytes(cont).map_err(|_| bad("bad position"))?;
    let tag = std::str::from_utf8(tag).map_err(|_| bad("bad tag"))?;
    if tag.is_empty() {
        return Err(bad("no tag"));
    }
    Ok((tag.to_owned(), cont))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let c =
            Continuation::from_bytes(&[1, 5, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        let t = encode("plant1/temp", &c);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode(&t).unwrap(), ("plant1/temp".to_owned(), c));
        for bad in [
            "",
            "!!!!",
            "AQ",
            &"A".repeat(5000),
            &URL_SAFE_NO_PAD.encode([2u8; 20]),
        ] {
            assert_eq!(decode(bad).unwrap_err().code, "bad_continuation", "{bad:?}");
        }
    }
}
