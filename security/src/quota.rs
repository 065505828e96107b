//! Token buckets for per-device and per-conduit rate quotas.
//!
//! No clock is read here: every call takes `now`, so tests run on fake time.
//! A [`Quota`] is owned by one connection task and a [`ConduitQuotas`] by the
//! router loop, so neither needs a lock. Arithmetic is exact integer math
//! (tokens scaled by 10^9 per second, in `u128`), so refill never drifts.

use std::time::Instant;

use crate::policy::{CompiledPolicy, ConduitClause, ProfileClause};
use crate::policy::{Decision, Rate, RuleId, Subject};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A token bucket: holds at most `burst` tokens and refills at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: u64,
    burst: u64,
    /// Tokens × 10^9, so that one nanosecond of refill is a whole unit.
    level: u128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `per_second == 0` never refills.
    pub fn new(per_second: u64, burst: u64, now: Instant) -> Self {
        Self {
            per_second,
            burst,
            level: u128::from(burst) * NANOS_PER_SEC,
            last: now,
        }
    }

    /// Takes `n` tokens if that many are available; takes nothing otherwise.
    /// A `now` earlier than the last call counts as no time passing.
    pub fn try_take(&mut self, now: Instant, n: u64) -> bool {
        self.refill(now);
        let cost = u128::from(n) * NANOS_PER_SEC;
        if cost > self.level {
            return false;
        }
        self.level -= cost;
        true
    }

    /// Whether `n` tokens are available now, without taking them.
    pub fn can_take(&mut self, now: Instant, n: u64) -> bool {
        self.refill(now);
        u128::from(n) * NANOS_PER_SEC <= self.level
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.level / NANOS_PER_SEC).unwrap_or(u64::MAX)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        if elapsed == 0 {
            return;
        }
        self.last = now;
        let cap = u128::from(self.burst) * NANOS_PER_SEC;
        let added = elapsed.saturating_mul(u128::from(self.per_second));
        self.level = self.level.saturating_add(added).min(cap);
    }
}

/// A device's message-rate and byte-rate quota, owned by its connection.
#[derive(Debug, Clone)]
pub struct Quota {
    profile: crate::policy::ProfileId,
    messages: TokenBucket,
    bytes: TokenBucket,
}

impl Quota {
    /// Full buckets sized by the subject's profile.
    pub fn new(subject: &Subject, now: Instant) -> Self {
        let limits = subject.rights().limits();
        Self {
            profile: subject.profile(),
            messages: bucket(limits.messages, now),
            bytes: bucket(limits.bytes, now),
        }
    }

    /// Charges one PUBLISH of `payload_len` bytes. Takes from both buckets or
    /// from neither. Denies with 0x97 (quota exceeded).
    pub fn charge(&mut self, now: Instant, payload_len: usize) -> Decision {
        let len = u64::try_from(payload_len).unwrap_or(u64::MAX);
        let clause = if !self.messages.can_take(now, 1) {
            ProfileClause::MessageRate
        } else if !self.bytes.can_take(now, len) {
            ProfileClause::ByteRate
        } else {
            self.messages.try_take(now, 1);
            self.bytes.try_take(now, len);
            return Decision::allow(
                crate::policy::reason::SUCCESS,
                RuleId::Profile {
                    profile: self.profile,
                    clause: ProfileClause::MessageRate,
                },
            );
        };
        Decision::deny(
            crate::policy::reason::QUOTA_EXCEEDED,
            RuleId::Profile {
                profile: self.profile,
                clause,
            },
        )
    }
}

/// Rate limits of every conduit that has one, owned by the router loop.
///
/// Charge once per message and conduit crossed (not once per subscriber):
/// the conduit id is in the [`RuleId`] of an allowing `Deliver` decision.
#[derive(Debug, Clone)]
pub struct ConduitQuotas {
    generation: u64,
    buckets: Box<[(Option<TokenBucket>, Option<TokenBucket>)]>,
}

impl ConduitQuotas {
    /// Full buckets for every conduit of `policy`.
    pub fn new(policy: &CompiledPolicy, now: Instant) -> Self {
        let buckets = policy
            .conduits()
            .iter()
            .map(|c| {
                (
                    c.message_rate().map(|r| bucket(r, now)),
                    c.byte_rate().map(|r| bucket(r, now)),
                )
            })
            .collect();
        Self {
            generation: policy.generation(),
            buckets,
        }
    }

    /// Charges a message of `payload_len` bytes to the conduit that `rule`
    /// names. Rules that name no conduit (same-zone traffic) always pass.
    /// A rule from another policy generation is denied: rebuild on reload.
    pub fn charge(
        &mut self,
        policy: &CompiledPolicy,
        rule: RuleId,
        now: Instant,
        payload_len: usize,
    ) -> Decision {
        let RuleId::Conduit { conduit, .. } = rule else {
            return Decision::allow(crate::policy::reason::SUCCESS, rule);
        };
        if policy.generation() != self.generation {
            return Decision::deny(crate::policy::reason::NOT_AUTHORIZED, RuleId::StalePolicy);
        }
        let Some((messages, bytes)) = self.buckets.get_mut(usize::from(conduit.index())) else {
            return Decision::deny(crate::policy::reason::NOT_AUTHORIZED, RuleId::StalePolicy);
        };
        let len = u64::try_from(payload_len).unwrap_or(u64::MAX);
        let deny = |clause| {
            Decision::deny(
                crate::policy::reason::QUOTA_EXCEEDED,
                RuleId::Conduit { conduit, clause },
            )
        };
        if let Some(m) = messages.as_mut() {
            if !m.can_take(now, 1) {
                return deny(ConduitClause::MessageRate);
            }
        }
        if let Some(b) = bytes.as_mut() {
            if !b.can_take(now, len) {
                return deny(ConduitClause::ByteRate);
            }
        }
        if let Some(m) = messages.as_mut() {
            m.try_take(now, 1);
        }
        if let Some(b) = bytes.as_mut() {
            b.try_take(now, len);
        }
        Decision::allow(crate::policy::reason::SUCCESS, rule)
    }
}

fn bucket(rate: Rate, now: Instant) -> TokenBucket {
    TokenBucket::new(rate.per_second(), rate.burst(), now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_full_and_drains() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.try_take(t0, 1));
        assert!(b.try_take(t0, 1));
        assert!(b.try_take(t0, 1));
        assert!(!b.try_take(t0, 1));
        assert_eq!(b.available(t0), 0);
    }

    #[test]
    fn refills_at_rate_and_caps_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert!(b.try_take(t0, 5));
        // 10 per second: one token every 100 ms.
        assert!(!b.try_take(t0 + ms(99), 1));
        assert!(b.try_take(t0 + ms(100), 1));
        assert!(!b.try_take(t0 + ms(150), 1));
        assert!(b.try_take(t0 + ms(200), 1));
        // A long pause refills to burst, not beyond.
        assert_eq!(b.available(t0 + Duration::from_secs(3600)), 5);
    }

    #[test]
    fn failed_take_takes_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000, t0);
        assert!(!b.try_take(t0, 1001));
        assert_eq!(b.available(t0), 1000);
        assert!(b.try_take(t0, 1000));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now();
        let t1 = t0 + ms(1000);
        let mut b = TokenBucket::new(1, 1, t1);
        assert!(b.try_take(t1, 1));
        assert!(!b.try_take(t0, 1));
        assert!(!b.try_take(t1, 1));
        assert!(b.try_take(t1 + ms(1000), 1));
    }

    #[test]
    fn zero_rate_never_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 2, t0);
        assert!(b.try_take(t0, 2));
        assert!(!b.try_take(t0 + Duration::from_secs(1_000_000), 1));
    }

    #[test]
    fn fractional_rates_are_exact() {
        // 3 per second: a token every 333.33… ms; after exactly 1 s, 3 tokens.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 3, t0);
        assert!(b.try_take(t0, 3));
        assert!(!b.try_take(t0 + ms(333), 1));
        assert!(b.try_take(t0 + ms(334), 1));
        assert_eq!(b.available(t0 + ms(1000)), 2);
    }

    #[test]
    fn huge_values_saturate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(u64::MAX, u64::MAX, t0);
        assert!(b.try_take(t0, u64::MAX));
        assert_eq!(b.available(t0 + Duration::from_secs(10_000_000)), u64::MAX);
    }
}
