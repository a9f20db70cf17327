//! rhizome-ca: the mesh's distributed certificate authority, as a library with no I/O.
//!
//! Identities are SPIFFE ids ([`SpiffeId`]): workloads `spiffe://<td>/ns/<ns>/svc/<svc>`,
//! agents `spiffe://<td>/agent/<node>`, operators `spiffe://<td>/operator/<name>`. Keys are
//! ECDSA P-256. A [`RootCa`] (offline, or held by a few signer agents) issues one
//! [`AgentCa`] intermediate per node (pathLen 0, optionally limited to some services) and
//! operator certificates; each agent issues its workloads' leaves ([`Credential`]) locally.
//!
//! Peers are checked by one core, [`verify_chain`], used by the rustls verifier
//! [`SpiffeVerifier`] (both TLS roles), the CLI and gossip signature checks. Trust bundles
//! ([`TrustBundle`], swapped at runtime through [`SharedBundle`]) may hold several roots, so
//! roots rotate by cross-signing without dropping connections. Join tokens
//! ([`token::Claims`], [`verify_token`]) let a new agent get its intermediate from a signer;
//! [`join`] has the TLS configs for that exchange, pinning the root by fingerprint.
//!
//! Certificates follow the SPIFFE X509-SVID and SPIFFE-ID standards, both when issued and
//! when verified ([`svid`], [`id`]): leaves carry exactly one URI SAN, a critical key usage
//! with `digitalSignature` only, `cA` false and both TLS EKUs; signing certificates (roots,
//! cross certificates, agent intermediates) carry `spiffe://<td>` with no path, so an agent
//! intermediate names its node in a private extension ([`extension`]), not in its id.
//!
//! Typical agent use: load [`AgentCa`] (`agent.pem`/`agent.key`) and [`TrustBundle`]
//! (`bundle.pem`); issue leaves with [`AgentCa::issue_workload`]; serve them through a
//! [`SniResolver`] in [`server_config`], present one per source with [`ClientCredential`] in
//! [`client_config`], both verified by a [`SpiffeVerifier`]; renew at [`renewal_at`]
//! and re-insert; rotate roots by storing a new bundle into the [`SharedBundle`].
//!
//! Non-goals: files, sockets and clocks. `now` is always an argument (`time::OffsetDateTime`
//! for issuance and tokens, `rustls_pki_types::UnixTime` for chain checks, see
//! [`unix_time`]); policy randomness (renewal jitter) is an argument. Key generation, serials,
//! token ids and ECDSA nonces use ring's `SystemRandom`.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod agent;
pub mod bundle;
pub mod extension;
pub mod id;
pub mod info;
pub mod issue;
pub mod join;
pub mod key;
pub mod pem;
pub mod renewal;
pub mod revocation;
pub mod root;
pub mod svid;
pub mod tls;
pub mod token;
pub mod verify;

pub use agent::{AgentCa, AgentCsr};
pub use bundle::{BundleError, ChangeHook, SharedBundle, TrustBundle};
pub use id::{
    CertKind, IdError, MAX_ID_LEN, Namespace, NodeName, OperatorName, ServiceName, SpiffeId,
    TrustDomain, split_spiffe_id,
};
pub use info::{CertInfo, InfoError};
pub use issue::{
    BACKDATE, Credential, DEFAULT_AGENT_TTL, DEFAULT_LEAF_TTL, DEFAULT_ROOT_TTL, IssueError,
};
pub use join::{PinnedRootVerifier, join_client_config, join_server_config, pinned_root};
pub use key::{KeyError, PrivateKey, sign, verify_signature};
pub use pem::{PemError, certs_from_pem, certs_to_pem};
pub use renewal::{fraction_of_life_used, renewal_at};
pub use revocation::{Revocation, RevocationError, RevocationSet, Revoked};
pub use root::{Fingerprint, RootCa};
pub use svid::SvidRule;
pub use tls::{
    ClientCredential, FixedClock, RefusalHook, SniResolver, SpiffeVerifier, client_config,
    peer_spiffe_id, server_config,
};
pub use token::{Claims, NodePattern, TokenError, TokenId, peek_claims, verify_token};
pub use verify::{
    SignedError, Usage, VerifyError, unix_time, verify_chain, verify_chain_with, verify_signed,
};
