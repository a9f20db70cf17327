//! Agent intermediates: the per-node CA (pathLen 0) that issues the leaves of the node's
//! workloads and the agent's own identity leaf, so issuance never crosses the network.

use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, SanType};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::id::{Namespace, NodeName, ServiceName, SpiffeId, TrustDomain};
use crate::info::{self, CertInfo};
use crate::issue::{self, Credential, IssueError};
use crate::key::PrivateKey;
use crate::pem;

/// A certificate signing request made by a joining agent, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCsr(pub String);

/// An agent's intermediate CA: `spiffe://<td>` (a signing certificate's id has no path,
/// X509-SVID 3.2), bound to its node by the agent-node extension, pathLen 0, optionally
/// limited to a list of services. It issues the agent's own leaf `spiffe://<td>/agent/<node>`
/// and its workloads' leaves.
#[derive(Debug)]
pub struct AgentCa {
    id: SpiffeId,
    node: NodeName,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKey,
    issuer: Issuer<'static, PrivateKey>,
    allowed: Option<Vec<ServiceName>>,
    not_after: OffsetDateTime,
}

impl AgentCa {
    /// Makes a fresh key and a CSR for joining as `node` of `td`. Keep the key; send the CSR
    /// (with a join token) to a signer, then call [`AgentCa::from_chain`] with its answer.
    pub fn new_csr(
        td: &TrustDomain,
        node: &NodeName,
    ) -> Result<(AgentCsr, PrivateKey), IssueError> {
        let key = PrivateKey::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("rhizome agent {node}"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(td.id_uri().try_into()?)];
        let csr = params.serialize_request(&key)?;
        Ok((AgentCsr(csr.pem()?), key))
    }

    /// Assembles an intermediate from its chain (agent certificate first, then any cross
    /// certificate; never the root) and key.
    pub fn from_chain(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKey,
    ) -> Result<Self, IssueError> {
        let cert = chain
            .first()
            .ok_or(IssueError::Unusable("empty agent chain"))?;
        issue::check_key_matches(cert, &key)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| info::InfoError::Malformed(e.to_string()))?;
        let allowed = info::allowed_services(&parsed)
            .map_err(|()| IssueError::Unusable("malformed allowed-services extension"))?;
        let facts = CertInfo::from_der(cert)?;
        let (id, node) = match (facts.is_ca, facts.agent_node, facts.trust_domain) {
            (true, Some(node), Some(td)) if facts.spiffe_id.is_none() => (
                SpiffeId::Agent {
                    td,
                    node: node.clone(),
                },
                node,
            ),
            _ => {
                return Err(match facts.spiffe_id {
                    Some(SpiffeId::Agent { node, .. }) if facts.is_ca => {
                        IssueError::LegacyIntermediate(node.to_string())
                    }
                    _ => IssueError::Unusable("not an agent intermediate"),
                });
            }
        };
        let issuer = Issuer::from_ca_cert_der(cert, key.clone())?;
        Ok(Self {
            id,
            node,
            chain,
            key,
            issuer,
            allowed,
            not_after: facts.not_after,
        })
    }

    /// Loads `agent.pem` (intermediate, then any cross certificate) and `agent.key`.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, IssueError> {
        Self::from_chain(
            pem::certs_from_pem(chain_pem)?,
            PrivateKey::from_pem(key_pem)?,
        )
    }

    /// `agent.pem`: the intermediate followed by any cross certificate.
    pub fn chain_pem(&self) -> String {
        pem::certs_to_pem(&self.chain)
    }

    /// `agent.key`: the PKCS#8 private key (write it with mode 0600).
    pub fn key_pem(&self) -> String {
        self.key.to_pem()
    }

    /// The intermediate certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The intermediate followed by any cross certificate.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The SPIFFE id of the agent's own leaf, `spiffe://<td>/agent/<node>` (the
    /// intermediate itself carries `spiffe://<td>` only).
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The node this intermediate is bound to.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The services it may issue for; `None` means any.
    pub fn allowed_services(&self) -> Option<&[ServiceName]> {
        self.allowed.as_deref()
    }

    /// End of the intermediate's validity (leaves never outlive it).
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues a workload leaf `spiffe://<td>/ns/<ns>/svc/<svc>` (+ DNS SAN
    /// `<svc>.<ns>.svc.<td>`) with a fresh key, valid from `now - 60 s` for `ttl`
    /// ([`issue::DEFAULT_LEAF_TTL`] is the default), capped at the intermediate's expiry.
    pub fn issue_workload(
        &self,
        ns: &Namespace,
        svc: &ServiceName,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Credential, IssueError> {
        if let Some(allowed) = &self.allowed
            && !allowed.contains(svc)
        {
            return Err(IssueError::ServiceNotAllowed(svc.to_string()));
        }
        let id = SpiffeId::Workload {
            td: self.id.trust_domain().clone(),
            ns: ns.clone(),
            svc: svc.clone(),
        };
        self.issue_leaf(&id, now, ttl)
    }

    /// Issues the agent's own identity leaf `spiffe://<td>/agent/<node>` (what the agent
    /// presents to signers and peers, and signs gossip entries with).
    pub fn issue_agent_leaf(
        &self,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Credential, IssueError> {
        let id = self.id.clone();
        self.issue_leaf(&id, now, ttl)
    }

    fn issue_leaf(
        &self,
        id: &SpiffeId,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Credential, IssueError> {
        let key = PrivateKey::generate()?;
        let params = issue::leaf_params(id, issue::window(now, ttl, Some(self.not_after))?)?;
        let leaf = params.signed_by(&key, &self.issuer)?.der().clone();
        let mut chain = Vec::with_capacity(self.chain.len() + 1);
        chain.push(leaf);
        chain.extend(self.chain.iter().cloned());
        Credential::from_chain(chain, key)
    }
}
