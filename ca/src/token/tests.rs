use super::*;
use time::Duration;

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn root() -> RootCa {
    RootCa::generate("rhizome.local".parse().unwrap(), t0(), Duration::days(365)).unwrap()
}

fn claims(root: &RootCa, pattern: &str) -> Claims {
    Claims {
        id: TokenId::random().unwrap(),
        expires: t0() + Duration::hours(1),
        node_pattern: pattern.parse().unwrap(),
        services: Some(vec!["web".parse().unwrap(), "db".parse().unwrap()]),
        root: root.fingerprint(),
        max_uses: Some(3),
    }
}

fn node(s: &str) -> NodeName {
    s.parse().unwrap()
}

#[test]
fn valid_token_round_trips_its_claims() {
    let r = root();
    let c = claims(&r, "web-*.eu?");
    let tok = c.sign(&r).unwrap();
    assert!(tok.starts_with("rhz1.") && !tok.contains(char::is_whitespace));
    let got = verify_token(&tok, r.cert(), t0(), &node("web-1.eu2")).unwrap();
    assert_eq!(got, c);
    assert_eq!(peek_claims(&tok).unwrap(), c);
}

#[test]
fn tampered_token_has_a_bad_signature() {
    let r = root();
    let tok = claims(&r, "web-*").sign(&r).unwrap();
    let (signed, sig) = tok.rsplit_once('.').unwrap();
    let payload = B64.decode(signed.split_once('.').unwrap().1).unwrap();
    let altered = String::from_utf8(payload).unwrap().replace("web-*", "*");
    let forged = format!("rhz1.{}.{sig}", B64.encode(altered));
    assert_eq!(
        verify_token(&forged, r.cert(), t0(), &node("db-1")),
        Err(TokenError::BadSignature)
    );
    // A flipped signature byte is caught too.
    let mut raw = B64.decode(sig).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let flipped = format!("{signed}.{}", B64.encode(raw));
    assert_eq!(
        verify_token(&flipped, r.cert(), t0(), &node("web-1")),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn expired_token_is_refused() {
    let r = root();
    let tok = claims(&r, "*").sign(&r).unwrap();
    let at = t0() + Duration::hours(1);
    assert_eq!(
        verify_token(&tok, r.cert(), at, &node("a")),
        Err(TokenError::Expired(at))
    );
}

#[test]
fn wrong_pattern_is_refused() {
    let r = root();
    let tok = claims(&r, "web-?").sign(&r).unwrap();
    let err = verify_token(&tok, r.cert(), t0(), &node("web-10")).unwrap_err();
    assert!(matches!(err, TokenError::PatternMismatch { .. }), "{err}");
}

#[test]
fn token_of_another_root_is_refused() {
    let (r, other) = (root(), root());
    let tok = claims(&r, "*").sign(&r).unwrap();
    let err = verify_token(&tok, other.cert(), t0(), &node("a")).unwrap_err();
    assert_eq!(
        err,
        TokenError::WrongRoot {
            token: r.fingerprint(),
            ours: other.fingerprint()
        }
    );
    // Signed by another root's key while naming ours: the signature gives it away.
    let forged = claims(&r, "*").sign(&other).unwrap();
    assert_eq!(
        verify_token(&forged, r.cert(), t0(), &node("a")),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn malformed_tokens_are_refused() {
    let r = root();
    for bad in [
        "",
        "rhz1",
        "rhz1.abc",
        "rhz2.e30.AA",
        "rhz1.!!.AA",
        "rhz1.e30.AA",
    ] {
        let err = verify_token(bad, r.cert(), t0(), &node("a")).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{bad:?}: {err}");
    }
}

#[test]
fn glob_semantics() {
    let cases = [
        ("*", "anything.at.all", true),
        ("web-*", "web-", true),
        ("web-*", "db-1", false),
        ("?", "a", true),
        ("?", "ab", false),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("*.eu", "n1.rack.eu", true),
        ("n?.*", "n1.x", true),
        ("**a", "bba", true),
        ("exact", "exact", true),
        ("exact", "exac", false),
    ];
    for (p, t, want) in cases {
        assert_eq!(glob_match(p.as_bytes(), t.as_bytes()), want, "{p} vs {t}");
    }
}
