//! When to renew a certificate: a jittered point between 60 % and 90 % of its lifetime, so
//! that a fleet issued at the same moment does not renew at the same moment.

use time::OffsetDateTime;

/// Earliest renewal point, as a fraction of the lifetime.
pub const RENEW_FROM: f64 = 0.6;
/// Latest renewal point, as a fraction of the lifetime.
pub const RENEW_UNTIL: f64 = 0.9;

/// The renewal instant for a certificate valid from `not_before` to `not_after`, given a
/// random `jitter` in [0, 1) supplied by the caller (values outside are clamped).
pub fn renewal_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    jitter: f64,
) -> OffsetDateTime {
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let fraction = RENEW_FROM + (RENEW_UNTIL - RENEW_FROM) * jitter;
    not_before + (not_after - not_before) * fraction
}

/// Fraction of the lifetime used at `now`: 0 at `not_before`, 1 at `not_after`, below 0
/// before and above 1 after. A zero-length lifetime counts as fully used.
pub fn fraction_of_life_used(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> f64 {
    let life = (not_after - not_before).as_seconds_f64();
    if life <= 0.0 {
        return 1.0;
    }
    (now - not_before).as_seconds_f64() / life
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn renewal_stays_between_60_and_90_percent() {
        let nb = OffsetDateTime::UNIX_EPOCH;
        let na = nb + Duration::hours(100);
        assert_eq!(renewal_at(nb, na, 0.0), nb + Duration::hours(60));
        assert_eq!(renewal_at(nb, na, 0.5), nb + Duration::hours(75));
        let late = renewal_at(nb, na, 0.999_999);
        assert!(late < nb + Duration::hours(90) && late > nb + Duration::hours(89));
        assert_eq!(renewal_at(nb, na, 7.0), nb + Duration::hours(90));
        assert_eq!(renewal_at(nb, na, f64::NAN), nb + Duration::hours(60));
    }

    #[test]
    fn fraction_of_life() {
        let nb = OffsetDateTime::UNIX_EPOCH;
        let na = nb + Duration::hours(10);
        assert_eq!(fraction_of_life_used(nb, na, nb + Duration::hours(9)), 0.9);
        assert!(fraction_of_life_used(nb, na, nb - Duration::hours(1)) < 0.0);
        assert_eq!(fraction_of_life_used(nb, nb, nb), 1.0);
    }
}
