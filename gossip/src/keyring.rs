//! Keyring: AEAD sealing of every gossip packet (AES-256-GCM, ring), in the spirit of Serf's
//! `encrypt` option, with replay protection.
//!
//! # Packet format
//!
//! ```text
//! cleartext:  [0x00][payload ...]
//! sealed:     [0x01][key hint: 4][nonce: 12][AEAD(timestamp_ms: u64 BE || payload)][tag: 16]
//! ```
//!
//! - The *key hint* is the first 4 bytes of SHA-256(key) ([`KeyId`]); the receiver tries
//!   every installed key with that hint (collisions are harmless, only slower). The version
//!   byte and the hint are the AEAD's associated data.
//! - The *nonce* is `sender epoch (8 bytes) || counter (4 bytes, big endian)`. The epoch is a
//!   random 64-bit value chosen per process (supplied by the caller); the counter increases by
//!   one per packet, so a nonce never repeats under one key unless two processes draw the same
//!   64-bit epoch. After 2^32 packets sealing fails until [`Keyring::reseed`] gives a new epoch.
//!
//! # Replay protection (what we chose)
//!
//! The opened nonce names the sender (epoch) and a packet number (counter); the sealed header
//! carries the sender's wall-clock timestamp. A packet is accepted only if its timestamp is
//! within `max_skew` of the receiver's clock and, per sender epoch, its counter is new within a
//! sliding window of [`REPLAY_WINDOW`] packets (IPsec/WireGuard style, RFC 6479's ring of
//! bitmap words, so UDP reordering is tolerated: a full-state push of a 10,000-member table is
//! ~160 packets sent back to back, and a 128-packet window refused the reordered ones). A sender's
//! window is forgotten once its newest timestamp is older than `max_skew`: any replay of its
//! packets would then fail the timestamp check anyway, so memory stays bounded by the number
//! of recently active senders. The window is updated only after the AEAD check succeeded, so
//! forged packets cannot poison it. This needs clocks synchronized to within `max_skew`
//! (default 120 s), which NTP-run hosts satisfy.
//!
//! Time and randomness are arguments: the caller passes `now_ms` (milliseconds since the UNIX
//! epoch) and the per-process epoch.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Length in bytes of a keyring key (AES-256).
pub const KEY_LEN: usize = 32;
/// Version byte of a cleartext packet.
const VERSION_CLEAR: u8 = 0;
/// Version byte of a sealed packet.
const VERSION_SEALED: u8 = 1;
/// Bytes of the key hint.
const HINT_LEN: usize = 4;
/// Bytes of the AEAD tag.
const TAG_LEN: usize = 16;
/// Bytes of the sealed timestamp.
const TS_LEN: usize = 8;
/// Offset of the ciphertext in a sealed packet.
const CIPHER_AT: usize = 1 + HINT_LEN + NONCE_LEN;
/// Bytes that sealing adds to a payload: version, hint, nonce, timestamp and tag.
pub const SEAL_OVERHEAD: usize = CIPHER_AT + TS_LEN + TAG_LEN;
/// Words in a sender's replay bitmap (64 packets each): 33 words, 2,112 bits.
const WINDOW_WORDS: usize = 33;
/// How far behind the newest packet of a sender an older packet is still accepted, in packets.
/// One word of the ring is always being refilled, so the guaranteed width is one word short of
/// the bitmap (RFC 6479). 2,048 packets cover a full-state push of ~128,000 members.
pub const REPLAY_WINDOW: u32 = ((WINDOW_WORDS - 1) * 64) as u32;
/// Default tolerated clock difference between sender and receiver.
pub const DEFAULT_MAX_SKEW_MS: u64 = 120_000;

/// A 32-byte AES-256-GCM gossip key. Its `Debug` shows only its [`KeyId`].
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Makes a fresh key from caller-supplied random bytes (`rhizome keyring generate`); the
    /// caller must take them from a CSPRNG.
    pub fn generate(random: [u8; KEY_LEN]) -> Self {
        Self(random)
    }

    /// The standard base64 text of the key, as written in `encrypt = "..."`.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// The short public fingerprint of this key (first 4 bytes of its SHA-256).
    pub fn id(&self) -> KeyId {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut id = [0u8; HINT_LEN];
        id.copy_from_slice(&digest.as_ref()[..HINT_LEN]);
        KeyId(id)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

impl FromStr for Key {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| KeyParseError::Base64)?;
        let arr: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyParseError::Length(bytes.len()))?;
        Ok(Self(arr))
    }
}

/// Public fingerprint of a key: the 4-byte hint carried in sealed packets, shown by
/// `rhizome keyring list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; HINT_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a key text could not be parsed. The operator's fault (config or CLI input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// Not standard base64. Operator's fault.
    #[error("key is not valid base64")]
    Base64,
    /// Decoded to the wrong number of bytes (32 needed). Operator's fault.
    #[error("key must be {KEY_LEN} bytes, got {0}")]
    Length(usize),
}

/// Why a keyring change was refused. The operator's fault; the keyring is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// The key is not installed. Operator's fault; nothing changed.
    #[error("key {0} is not installed")]
    NotInstalled(KeyId),
    /// The primary key cannot be removed; `use` another key first. Operator's fault; nothing
    /// changed.
    #[error("key {0} is the primary key and cannot be removed")]
    RemovePrimary(KeyId),
}

/// Why a packet could not be sealed. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// 2^32 packets were sealed with this epoch; call [`Keyring::reseed`]. Driver's fault.
    #[error("nonce counter exhausted; reseed the keyring epoch")]
    CounterExhausted,
    /// The payload exceeds what AES-GCM can seal in one message. Caller's fault.
    #[error("payload too large to seal")]
    TooLarge,
}

/// Why an incoming packet was dropped; the agent counts each kind. Always the sender's (or an
/// attacker's) fault; the keyring state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum OpenError {
    /// Shorter than the smallest valid packet. Peer's fault.
    #[error("packet too short")]
    TooShort,
    /// Unknown version byte. Peer's fault (or a newer protocol).
    #[error("unknown packet version {0}")]
    UnknownVersion(u8),
    /// A cleartext packet while this keyring requires encryption. Peer's fault (its config).
    #[error("cleartext packet while encryption is on")]
    Cleartext,
    /// No installed key matches the hint (or encryption is off here). Peer's fault (its key).
    #[error("no installed key matches the packet")]
    UnknownKey,
    /// Authentication failed under every candidate key: corrupted or forged. Peer's fault.
    #[error("packet failed authentication")]
    Garbled,
    /// Authentic but already seen, too old, or too far in the future. Peer's (or an
    /// attacker's) fault.
    #[error("packet replayed or outside the time window")]
    Replayed,
}

/// One installed key with its prepared AEAD state.
struct Installed {
    key: Key,
    id: KeyId,
    aead: LessSafeKey,
}

impl Installed {
    fn new(key: Key) -> Self {
        let id = key.id();
        // AES_256_GCM accepts exactly KEY_LEN bytes, which the type guarantees.
        let unbound = UnboundKey::new(&AES_256_GCM, &key.0);
        let aead = match unbound {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("32-byte keys are always valid for AES-256-GCM"),
        };
        Self { key, id, aead }
    }
}

/// Replay state of one sender epoch: bit `c % bits` of the ring says whether packet `c` was
/// seen, for `c` within [`REPLAY_WINDOW`] of `highest`.
#[derive(Clone, Debug)]
struct SenderWindow {
    highest: u32,
    ring: [u64; WINDOW_WORDS],
    newest_ts: u64,
}

impl SenderWindow {
    /// A window whose first packet is `counter`.
    fn starting_at(counter: u32, ts: u64) -> Self {
        let mut w = Self {
            highest: counter,
            ring: [0; WINDOW_WORDS],
            newest_ts: ts,
        };
        w.mark(counter);
        w
    }

    /// Word index and bit mask of a packet number in the ring.
    fn slot(counter: u32) -> (usize, u64) {
        let block = (counter / 64) as usize % WINDOW_WORDS;
        (block, 1u64 << (counter % 64))
    }

    fn mark(&mut self, counter: u32) {
        let (word, bit) = Self::slot(counter);
        self.ring[word] |= bit;
    }

    /// Records `counter` if it is new and within the window; false for a replay or a packet
    /// too far behind.
    fn accept(&mut self, counter: u32) -> bool {
        if counter > self.highest {
            // Clear the words that the ring advances over (all of them after a long jump).
            let from = self.highest / 64;
            let to = counter / 64;
            let steps = (to - from).min(WINDOW_WORDS as u32);
            for i in 1..=steps {
                self.ring[(from + i) as usize % WINDOW_WORDS] = 0;
            }
            self.highest = counter;
            self.mark(counter);
            return true;
        }
        if self.highest - counter >= REPLAY_WINDOW {
            return false;
        }
        let (word, bit) = Self::slot(counter);
        if self.ring[word] & bit != 0 {
            return false;
        }
        self.ring[word] |= bit;
        true
    }
}

/// What `rhizome keyring list` shows for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's fingerprint.
    pub id: KeyId,
    /// Whether outgoing packets are sealed with it.
    pub is_primary: bool,
}

/// The keys of one agent: one primary (for sealing), any number accepted (for opening), plus
/// this process's nonce epoch and the replay windows of the senders it hears from.
pub struct Keyring {
    keys: Vec<Installed>,
    primary: Option<KeyId>,
    epoch: u64,
    counter: u32,
    windows: HashMap<u64, SenderWindow>,
    max_skew_ms: u64,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.list())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring without keys: packets travel in the clear (the agent must warn).
    /// `epoch` must be random per process (it names this sender in nonces).
    pub fn cleartext(epoch: u64) -> Self {
        Self {
            keys: Vec::new(),
            primary: None,
            epoch,
            counter: 0,
            windows: HashMap::new(),
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
        }
    }

    /// A keyring sealing with `primary`. `epoch` must be random per process.
    pub fn new(primary: Key, epoch: u64) -> Self {
        let mut ring = Self::cleartext(epoch);
        ring.primary = Some(primary.id());
        ring.keys.push(Installed::new(primary));
        ring
    }

    /// Changes the tolerated sender clock difference (default 120 s).
    pub fn set_max_skew_ms(&mut self, max_skew_ms: u64) {
        self.max_skew_ms = max_skew_ms;
    }

    /// Whether packets are sealed (a primary key exists).
    pub fn is_encrypted(&self) -> bool {
        self.primary.is_some()
    }

    /// Starts a new nonce epoch (fresh random value) and resets the packet counter.
    pub fn reseed(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.counter = 0;
    }

    /// Installs an accepted key. Returns `false` if it was already installed. On a cleartext
    /// keyring the first installed key becomes primary, turning encryption on.
    pub fn install(&mut self, key: Key) -> bool {
        let id = key.id();
        if self.keys.iter().any(|k| k.key == key) {
            return false;
        }
        self.keys.push(Installed::new(key));
        if self.primary.is_none() {
            self.primary = Some(id);
        }
        true
    }

    /// Makes an installed key the primary (used for sealing from now on).
    pub fn use_key(&mut self, id: KeyId) -> Result<(), KeyringError> {
        if !self.keys.iter().any(|k| k.id == id) {
            return Err(KeyringError::NotInstalled(id));
        }
        self.primary = Some(id);
        Ok(())
    }

    /// Removes an accepted key; the primary cannot be removed.
    pub fn remove(&mut self, id: KeyId) -> Result<(), KeyringError> {
        if self.primary == Some(id) {
            return Err(KeyringError::RemovePrimary(id));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.id != id);
        if self.keys.len() == before {
            return Err(KeyringError::NotInstalled(id));
        }
        Ok(())
    }

    /// The installed keys, primary flagged.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|k| KeyInfo {
                id: k.id,
                is_primary: self.primary == Some(k.id),
            })
            .collect()
    }

    /// Seals `payload` with the primary key (or frames it in the clear without one).
    pub fn seal(&mut self, now_ms: u64, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some(primary) = self
            .primary
            .and_then(|id| self.keys.iter().find(|k| k.id == id))
        else {
            let mut out = Vec::with_capacity(payload.len() + 1);
            out.push(VERSION_CLEAR);
            out.extend_from_slice(payload);
            return Ok(out);
        };
        let counter = self.counter;
        self.counter = counter.checked_add(1).ok_or(SealError::CounterExhausted)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&self.epoch.to_be_bytes());
        nonce[8..].copy_from_slice(&counter.to_be_bytes());

        let mut out = Vec::with_capacity(payload.len() + SEAL_OVERHEAD);
        out.push(VERSION_SEALED);
        out.extend_from_slice(&primary.id.0);
        out.extend_from_slice(&nonce);
        let mut body = Vec::with_capacity(TS_LEN + payload.len() + TAG_LEN);
        body.extend_from_slice(&now_ms.to_be_bytes());
        body.extend_from_slice(payload);
        let aad = aad_of(primary.id);
        primary
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError::TooLarge)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens one received packet, checking authenticity and freshness; returns the payload.
    pub fn open(&mut self, now_ms: u64, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&version, rest) = packet.split_first().ok_or(OpenError::TooShort)?;
        match version {
            VERSION_CLEAR if self.primary.is_none() => Ok(rest.to_vec()),
            VERSION_CLEAR => Err(OpenError::Cleartext),
            VERSION_SEALED => self.open_sealed(now_ms, packet),
            other => Err(OpenError::UnknownVersion(other)),
        }
    }

    fn open_sealed(&mut self, now_ms: u64, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        if packet.len() < SEAL_OVERHEAD {
            return Err(OpenError::TooShort);
        }
        let mut hint = [0u8; HINT_LEN];
        hint.copy_from_slice(&packet[1..1 + HINT_LEN]);
        let hint = KeyId(hint);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&packet[1 + HINT_LEN..CIPHER_AT]);
        let mut candidates = self.keys.iter().filter(|k| k.id == hint).peekable();
        if candidates.peek().is_none() {
            return Err(OpenError::UnknownKey);
        }
        let mut opened = None;
        for cand in candidates {
            let mut body = packet[CIPHER_AT..].to_vec();
            let ok = cand
                .aead
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad_of(hint)),
                    &mut body,
                )
                .map(|plain| plain.len())
                .ok();
            if let Some(len) = ok {
                body.truncate(len);
                opened = Some(body);
                break;
            }
        }
        let mut body = opened.ok_or(OpenError::Garbled)?;
        let mut ts = [0u8; TS_LEN];
        ts.copy_from_slice(&body[..TS_LEN]);
        let ts = u64::from_be_bytes(ts);
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&nonce[..8]);
        let mut counter = [0u8; 4];
        counter.copy_from_slice(&nonce[8..]);
        self.check_replay(
            now_ms,
            u64::from_be_bytes(epoch),
            u32::from_be_bytes(counter),
            ts,
        )?;
        body.drain(..TS_LEN);
        Ok(body)
    }

    /// Accepts (and records) a packet number of a sender, or reports a replay.
    fn check_replay(
        &mut self,
        now_ms: u64,
        epoch: u64,
        counter: u32,
        ts: u64,
    ) -> Result<(), OpenError> {
        if ts.saturating_add(self.max_skew_ms) < now_ms
            || ts > now_ms.saturating_add(self.max_skew_ms)
        {
            return Err(OpenError::Replayed);
        }
        if !self.windows.contains_key(&epoch) {
            self.forget_stale_senders(now_ms);
        }
        let w = match self.windows.entry(epoch) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(SenderWindow::starting_at(counter, ts));
                return Ok(());
            }
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        };
        if !w.accept(counter) {
            return Err(OpenError::Replayed);
        }
        w.newest_ts = w.newest_ts.max(ts);
        Ok(())
    }

    /// Drops the windows of senders whose every packet would now fail the timestamp check.
    fn forget_stale_senders(&mut self, now_ms: u64) {
        let skew = self.max_skew_ms;
        self.windows
            .retain(|_, w| w.newest_ts.saturating_add(skew) >= now_ms);
    }

    /// Number of sender windows currently remembered (a metric).
    pub fn tracked_senders(&self) -> usize {
        self.windows.len()
    }
}

/// Associated data of a sealed packet: version and key hint.
fn aad_of(id: KeyId) -> [u8; 1 + HINT_LEN] {
    let mut aad = [VERSION_SEALED; 1 + HINT_LEN];
    aad[1..].copy_from_slice(&id.0);
    aad
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
