//! Expiry is loud: every certificate the agent holds (roots, intermediate, agent leaf,
//! workload leaves) described for `GET /v1/ca/status` and `rhizome ca status`, exported as
//! the `rhizome_cert_expiry_seconds{kind, spiffe_id, serial}` gauge family, and warned about
//! in the log once past 90 % of its life (again every hour while it stays so);
//! `rhizome_ca_intermediate_usable` says whether the intermediate can issue at all.

use crate::api::types::CertStatus;
use crate::ca::identity::Identity;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rhizome_ca::CertInfo;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Fraction of its life after which a certificate is warned about.
pub const WARN_FRACTION: f64 = 0.9;
/// How often the warning about one certificate repeats.
pub const WARN_EVERY: Duration = Duration::from_secs(3600);

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn describe(kind: &str, der: &CertificateDer<'_>, now: OffsetDateTime) -> Option<CertStatus> {
    let info = CertInfo::from_der(der).ok()?;
    let spiffe_id = match (&info.spiffe_id, &info.trust_domain) {
        (Some(id), _) => id.to_string(),
        (None, Some(td)) => td.id_uri(),
        (None, None) => String::new(),
    };
    Some(CertStatus {
        kind: kind.to_string(),
        spiffe_id,
        subject: info.subject.clone(),
        issuer: info.issuer.clone(),
        serial: info.serial.clone(),
        not_before: rfc3339(info.not_before),
        not_after: rfc3339(info.not_after),
        seconds_to_expiry: info.seconds_to_expiry(now),
        fraction_used: info.fraction_of_life_used(now),
    })
}

/// Every certificate the agent holds, at `now`: roots, the intermediate (and any cross
/// certificate it carries), the agent leaf, then the workload leaves.
pub fn report(identity: &Identity, now: OffsetDateTime) -> Vec<CertStatus> {
    let mut out = Vec::new();
    for root in identity.bundle().load().roots() {
        out.extend(describe("root", root, now));
    }
    let agent_ca = identity.agent_ca();
    for (i, cert) in agent_ca.chain().iter().enumerate() {
        let kind = if i == 0 { "intermediate" } else { "cross" };
        out.extend(describe(kind, cert, now));
    }
    out.extend(describe("agent", identity.agent_leaf().leaf(), now));
    for (_, w) in identity.workloads() {
        out.extend(describe("workload", w.credential.leaf(), now));
    }
    out
}

/// The `/v1/ca/status` route with its state, to merge into the agent's router.
pub fn routes(identity: std::sync::Arc<Identity>) -> axum::Router {
    axum::Router::new()
        .route("/v1/ca/status", axum::routing::get(status_handler))
        .with_state(identity)
}

/// `GET /v1/ca/status`: every certificate the agent holds, now.
async fn status_handler(
    axum::extract::State(identity): axum::extract::State<std::sync::Arc<Identity>>,
) -> axum::Json<Vec<CertStatus>> {
    axum::Json(report(&identity, OffsetDateTime::now_utc()))
}

/// Labels of `rhizome_cert_expiry_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// As [`CertStatus::kind`].
    pub kind: String,
    /// As [`CertStatus::spiffe_id`].
    pub spiffe_id: String,
    /// Serial, so two roots of one trust domain (rotation) stay apart.
    pub serial: String,
}

/// The seconds-to-expiry gauges and the warning memory.
pub struct ExpiryWatch {
    gauges: Family<CertLabels, Gauge>,
    warned: HashMap<String, Instant>,
    intermediate_usable: Gauge,
}

impl ExpiryWatch {
    /// Registers `rhizome_cert_expiry_seconds` in `metrics`.
    pub fn new(metrics: &crate::metrics::Metrics) -> ExpiryWatch {
        let gauges = Family::<CertLabels, Gauge>::default();
        metrics.register(
            "cert_expiry_seconds",
            "Seconds until each certificate held by the agent expires",
            gauges.clone(),
        );
        let intermediate_usable = Gauge::default();
        metrics.register(
            "ca_intermediate_usable",
            "1 while the agent's intermediate is valid and issues leaves, 0 once it expired (or \
             is not valid yet): replace it",
            intermediate_usable.clone(),
        );
        intermediate_usable.set(1);
        ExpiryWatch {
            gauges,
            warned: HashMap::new(),
            intermediate_usable,
        }
    }

    /// Sets `rhizome_ca_intermediate_usable`.
    pub fn set_intermediate_usable(&self, usable: bool) {
        self.intermediate_usable.set(i64::from(usable));
    }

    /// Refreshes the gauges (replacing every series, so renewed certificates disappear) and
    /// logs a warning for each certificate past [`WARN_FRACTION`] of its life, at most once per
    /// [`WARN_EVERY`] each.
    pub fn update(&mut self, certs: &[CertStatus], mono_now: Instant) -> ExpiryUpdate {
        self.gauges.clear();
        let mut late = 0;
        let mut warned = 0;
        for c in certs {
            self.gauges
                .get_or_create(&CertLabels {
                    kind: c.kind.clone(),
                    spiffe_id: c.spiffe_id.clone(),
                    serial: c.serial.clone(),
                })
                .set(c.seconds_to_expiry);
            if c.fraction_used < WARN_FRACTION {
                continue;
            }
            late += 1;
            let due = self
                .warned
                .get(&c.serial)
                .is_none_or(|last| mono_now.duration_since(*last) >= WARN_EVERY);
            if due {
                tracing::warn!(
                    cert.kind = %c.kind,
                    cert.spiffe_id = %c.spiffe_id,
                    cert.serial = %c.serial,
                    cert.not_after = %c.not_after,
                    cert.seconds_to_expiry = c.seconds_to_expiry,
                    cert.fraction_used = c.fraction_used,
                    "certificate past 90% of its life: renew it"
                );
                self.warned.insert(c.serial.clone(), mono_now);
                warned += 1;
            }
        }
        self.warned
            .retain(|serial, _| certs.iter().any(|c| &c.serial == serial));
        ExpiryUpdate { late, warned }
    }

    /// Whether the certificate of this serial was warned about (for tests).
    pub fn was_warned(&self, serial: &str) -> bool {
        self.warned.contains_key(serial)
    }
}

/// What one [`ExpiryWatch::update`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryUpdate {
    /// Certificates past [`WARN_FRACTION`] of their life.
    pub late: usize,
    /// Warnings logged by this update (late ones not warned about within [`WARN_EVERY`]).
    pub warned: usize,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    #[test]
    fn report_lists_every_certificate_and_warns_late_ones_hourly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AgentConfig::dev("n1", dir.path().to_path_buf());
        let id = Identity::load(&cfg).unwrap();
        id.ensure_workload("default", "web").unwrap();
        let now = OffsetDateTime::now_utc();
        let certs = report(&id, now);
        let kinds: Vec<&str> = certs.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["root", "intermediate", "agent", "workload"]);
        assert_eq!(
            certs[3].spiffe_id,
            "spiffe://rhizome.local/ns/default/svc/web"
        );
        assert_eq!(certs[0].spiffe_id, "spiffe://rhizome.local");
        assert!(certs[3].seconds_to_expiry > 71 * 3600);
        assert!(certs.iter().all(|c| c.fraction_used < 0.1));

        let metrics = crate::metrics::Metrics::new();
        let mut watch = ExpiryWatch::new(&metrics);
        let t0 = Instant::now();
        assert_eq!(
            watch.update(&certs, t0),
            ExpiryUpdate { late: 0, warned: 0 }
        );
        let text = metrics.encode();
        assert!(
            text.contains("rhizome_cert_expiry_seconds{kind=\"workload\",spiffe_id=\"spiffe://rhizome.local/ns/default/svc/web\""),
            "{text}"
        );
        // 71 hours later the 72 h leaves and the agent leaf are past 90 %: warned once, then
        // again only after an hour.
        let later = report(&id, now + time::Duration::hours(71));
        assert_eq!(
            watch.update(&later, t0),
            ExpiryUpdate { late: 2, warned: 2 }
        );
        let half_hour = t0 + Duration::from_secs(1800);
        assert_eq!(
            watch.update(&later, half_hour),
            ExpiryUpdate { late: 2, warned: 0 }
        );
        let hour = t0 + WARN_EVERY;
        assert_eq!(
            watch.update(&later, hour),
            ExpiryUpdate { late: 2, warned: 2 }
        );
        assert!(watch.was_warned(&certs[3].serial));
        assert!(!watch.was_warned(&certs[0].serial), "the root is young");
    }
}
