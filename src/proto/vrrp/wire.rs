//! VRRP wire format: VRRPv3 (RFC 5798, IPv4 and IPv6) and VRRPv2 (RFC 3768).
//!
//! Built the smoltcp way, because adverts arrive from the network and must be
//! judged before anything believes them:
//!
//! - [`Packet`] is a zero-copy view over any `T: AsRef<[u8]>`. Field offsets
//!   live in the private `field` module, accessors read them in place. The
//!   accessors assume the length was checked, so [`Packet::new_checked`] is the
//!   only way in for untrusted bytes (it checks the fixed header); the per
//!   family length check happens in [`Repr::parse`], which is the only thing a
//!   driver should call on received bytes. `parse` never panics (a proptest
//!   feeds it arbitrary bytes).
//! - [`Repr`] is the parsed, validated, owned form: what the state machine
//!   consumes and what it asks to be sent. `emit` writes it back; for every
//!   valid `Repr`, `parse(emit(r)) == r` (property tested), and real
//!   keepalived adverts round-trip byte for byte (fixtures in
//!   `tests/fixtures/vrrp/`).
//! - Checksums are small pure functions: v3 sums an IPv4/IPv6 pseudo-header
//!   plus the VRRP message, v2 only the VRRP message.
//! - Every reason to drop a packet is one variant of the cheap, `Copy`
//!   [`Error`], with [`Error::index`]/[`Error::as_str`] so the I/O layer can
//!   keep one counter per reason without allocating.
//!
//! The advert interval is kept in one unit for both versions, centiseconds
//! (v3's native unit; v2's whole seconds are multiplied by 100), so the state
//! machine never cares which version it speaks.
//!
//! The enclosing IP header is the kernel's business, but RFC 5798 §7.1 makes
//! two of its facts part of validation (TTL/hop limit 255, protocol 112):
//! [`parse_ipv4`] splits a whole IPv4 datagram as delivered by an IPv4 raw
//! socket (checking the protocol), and [`envelope_v6`] assembles the same
//! facts ([`Envelope`]) from what an IPv6 raw socket reports. The TTL / hop
//! limit is carried, not judged there: [`hops_ok`] needs to know whether the
//! advert came from one of the instance's unicast peers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The only TTL / hop limit a VRRP packet may arrive with (RFC 5798 §5.1.1.3).
pub const TTL: u8 = 255;
/// IPv4 multicast group for adverts.
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group for adverts.
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Length of the fixed VRRP header (both versions).
pub const HEADER_LEN: usize = 8;
/// Length of the v2 authentication data trailer.
pub const AUTH_LEN: usize = 8;
/// Largest v3 Max Adver Int (12 bits of centiseconds, 40.95 s).
pub const V3_MAX_INTERVAL_CS: u16 = 0x0fff;
/// Largest v2 Adver Int, in centiseconds (255 s).
pub const V2_MAX_INTERVAL_CS: u16 = 255 * 100;
/// VRRP message type ADVERTISEMENT, the only one defined.
pub const TYPE_ADVERTISEMENT: u8 = 1;

mod field {
    use std::ops::Range;

    /// Version (high nibble) and type (low nibble).
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v3: 4 reserved bits + 12 bits Max Adver Int (centiseconds).
    pub const MAX_ADVER_INT: Range<usize> = 4..6;
    /// v2: Auth Type.
    pub const AUTH_TYPE: usize = 4;
    /// v2: Adver Int (seconds).
    pub const ADVER_INT: usize = 5;
    pub const CHECKSUM: Range<usize> = 6..8;
    /// Start of the address list.
    pub const ADDRESSES: usize = 8;
}

/// Why a packet (or its IP envelope) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than the fixed header, or than the addresses (+ auth data) it announces.
    Truncated,
    /// Longer than the message its address count describes.
    BadLength,
    /// Version nibble is neither 2 nor 3 (or v2 over IPv6).
    BadVersion,
    /// Type nibble is not ADVERTISEMENT.
    BadType,
    /// Address count is zero (RFC 5798 §5.2.5: the minimum is 1).
    NoAddresses,
    /// Advertisement interval is zero.
    BadInterval,
    /// v2 Auth Type other than 0 (none) or 1 (simple password).
    BadAuthType,
    /// Checksum does not verify.
    BadChecksum,
    /// Source and destination address families differ.
    BadFamily,
    /// TTL / hop limit is not 255.
    BadTtl,
    /// IP protocol is not 112.
    BadProtocol,
    /// The enclosing IPv4 header is malformed.
    BadIpHeader,
}

impl Error {
    /// Every variant, in [`Error::index`] order (for per-reason counters).
    pub const ALL: [Error; 12] = [
        Error::Truncated,
        Error::BadLength,
        Error::BadVersion,
        Error::BadType,
        Error::NoAddresses,
        Error::BadInterval,
        Error::BadAuthType,
        Error::BadChecksum,
        Error::BadFamily,
        Error::BadTtl,
        Error::BadProtocol,
        Error::BadIpHeader,
    ];
    /// Number of variants.
    pub const COUNT: usize = Error::ALL.len();

    /// Dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short snake_case label, e.g. for a metrics `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadLength => "bad_length",
            Error::BadVersion => "bad_version",
            Error::BadType => "bad_type",
            Error::NoAddresses => "no_addresses",
            Error::BadInterval => "bad_interval",
            Error::BadAuthType => "bad_auth_type",
            Error::BadChecksum => "bad_checksum",
            Error::BadFamily => "bad_family",
            Error::BadTtl => "bad_ttl",
            Error::BadProtocol => "bad_protocol",
            Error::BadIpHeader => "bad_ip_header",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// Result of wire operations.
pub type Result<T> = core::result::Result<T, Error>;

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, interval in seconds, 8 bytes of auth data.
    V2,
    /// RFC 5798: IPv4 or IPv6, interval in centiseconds, pseudo-header checksum.
    V3,
}

impl Version {
    /// The version number on the wire.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    /// From the version number on the wire.
    pub fn from_number(n: u8) -> Option<Version> {
        match n {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            _ => None,
        }
    }
}

/// VRRP message type. Only ADVERTISEMENT exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Advertisement,
}

/// v2 authentication (RFC 3768 §5.3.6). v3 has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Auth {
    /// Auth Type 0.
    None,
    /// Auth Type 1: an 8-byte password, zero padded (keepalived `auth_type PASS`).
    Simple([u8; 8]),
}

impl Auth {
    /// Simple password auth from a string the way keepalived does it: the
    /// first 8 bytes, zero padded.
    pub fn simple(password: &str) -> Auth {
        let mut data = [0u8; 8];
        let bytes = password.as_bytes();
        let n = bytes.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
        Auth::Simple(data)
    }
}

/// Address family of an advert, from its IP source/destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Family of a (src, dst) pair, or `BadFamily` if they differ.
    pub fn of(src: IpAddr, dst: IpAddr) -> Result<Family> {
        match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => Ok(Family::V4),
            (IpAddr::V6(_), IpAddr::V6(_)) => Ok(Family::V6),
            _ => Err(Error::BadFamily),
        }
    }

    /// Bytes per address in the address list.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// Length of a whole VRRP message carrying `count` addresses.
pub fn message_len(version: Version, family: Family, count: usize) -> usize {
    let auth = match version {
        Version::V2 => AUTH_LEN,
        Version::V3 => 0,
    };
    HEADER_LEN + count * family.addr_len() + auth
}

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

/// One's-complement sum of `data` as big-endian 16-bit words (odd tail padded
/// with zero), not yet folded. VRRP messages are < 4.2 kB, so `u32` cannot overflow.
pub fn sum_words(data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u32 = 0;
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Fold carries and complement: the value that goes in a checksum field.
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Partial sum of the IPv4 pseudo-header (src, dst, zero, protocol 112, length).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u32 {
    sum_words(&src.octets()) + sum_words(&dst.octets()) + u32::from(PROTOCOL) + len as u32
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1: src, dst, 32-bit
/// length, zero, next header 112).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> u32 {
    pseudo_header_v6_for(src, dst, len, PROTOCOL)
}

/// The same for another upper-layer protocol (`next_header`): ICMPv6 (58)
/// for the neighbour advertisements a new IPv6 master sends.
pub fn pseudo_header_v6_for(src: Ipv6Addr, dst: Ipv6Addr, len: usize, next_header: u8) -> u32 {
    let len = len as u32;
    sum_words(&src.octets())
        + sum_words(&dst.octets())
        + (len >> 16)
        + (len & 0xffff)
        + u32::from(next_header)
}

/// VRRPv2 checksum: over the VRRP message only.
pub fn checksum_v2(msg: &[u8]) -> u16 {
    finish(sum_words(msg))
}

/// VRRPv3 checksum: over the pseudo-header of `src`/`dst` plus the message.
/// Mixed families give `BadFamily`.
pub fn checksum_v3(src: IpAddr, dst: IpAddr, msg: &[u8]) -> Result<u16> {
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_header_v4(s, d, msg.len()),
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_header_v6(s, d, msg.len()),
        _ => return Err(Error::BadFamily),
    };
    Ok(finish(pseudo + sum_words(msg)))
}

/// Checksum of `msg` for `version`. Computed over `msg` as is: with the
/// checksum field zeroed this is the value to store; over a received message
/// (field included) it is 0 when the message verifies.
pub fn checksum(version: Version, src: IpAddr, dst: IpAddr, msg: &[u8]) -> Result<u16> {
    match version {
        Version::V2 => Ok(checksum_v2(msg)),
        Version::V3 => checksum_v3(src, dst, msg),
    }
}

// ---------------------------------------------------------------------------
// Packet view
// ---------------------------------------------------------------------------

/// Zero-copy view of a VRRP message (the IP payload, exactly).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checks. Accessors panic if the buffer is too short; use
    /// only on buffers you sized yourself (e.g. for `emit`).
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap untrusted bytes: checks that the fixed header is present. The
    /// address list is checked by [`Packet::check_len`] (done by [`Repr::parse`]).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Check the buffer holds exactly the message the header describes for
    /// `family` (fixed header, `count` addresses, v2 auth data). Needs a
    /// valid version nibble.
    pub fn check_len(&self, family: Family) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let version = Version::from_number(self.version()).ok_or(Error::BadVersion)?;
        let want = message_len(version, family, usize::from(self.addr_count()));
        if len < want {
            Err(Error::Truncated)
        } else if len > want {
            Err(Error::BadLength)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole message as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// Type nibble.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    /// Virtual router id.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// Priority (0 = master is stopping, 255 = address owner).
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Number of addresses in the list.
    pub fn addr_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// v3: Max Adver Int in centiseconds (the low 12 bits).
    pub fn max_adver_int(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::MAX_ADVER_INT];
        u16::from_be_bytes([b[0], b[1]]) & 0x0fff
    }

    /// v2: Auth Type.
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE]
    }

    /// v2: Adver Int in seconds.
    pub fn adver_int(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The `i`-th IPv4 address. Needs `check_len(Family::V4)`.
    pub fn addr_v4(&self, i: usize) -> Ipv4Addr {
        let at = field::ADDRESSES + i * 4;
        let b = &self.buffer.as_ref()[at..at + 4];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The `i`-th IPv6 address. Needs `check_len(Family::V6)`.
    pub fn addr_v6(&self, i: usize) -> Ipv6Addr {
        let at = field::ADDRESSES + i * 16;
        let mut o = [0u8; 16];
        o.copy_from_slice(&self.buffer.as_ref()[at..at + 16]);
        Ipv6Addr::from(o)
    }

    /// v2: the 8 bytes of authentication data after the (IPv4) addresses.
    /// Needs `check_len(Family::V4)`.
    pub fn auth_data(&self) -> [u8; 8] {
        let at = field::ADDRESSES + usize::from(self.addr_count()) * 4;
        let mut d = [0u8; 8];
        d.copy_from_slice(&self.buffer.as_ref()[at..at + AUTH_LEN]);
        d
    }

    /// Whether the checksum verifies for this version and IP src/dst.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let Some(version) = Version::from_number(self.version()) else {
            return false;
        };
        checksum(version, src, dst, self.buffer.as_ref()) == Ok(0)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version and type nibbles.
    pub fn set_version_type(&mut self, version: u8, msg_type: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (msg_type & 0x0f);
    }

    pub fn set_vrid(&mut self, v: u8) {
        self.buffer.as_mut()[field::VRID] = v;
    }

    pub fn set_priority(&mut self, v: u8) {
        self.buffer.as_mut()[field::PRIORITY] = v;
    }

    pub fn set_addr_count(&mut self, v: u8) {
        self.buffer.as_mut()[field::COUNT] = v;
    }

    /// v3: Max Adver Int (centiseconds, 12 bits; reserved bits written as 0).
    pub fn set_max_adver_int(&mut self, cs: u16) {
        self.buffer.as_mut()[field::MAX_ADVER_INT].copy_from_slice(&(cs & 0x0fff).to_be_bytes());
    }

    /// v2: Auth Type.
    pub fn set_auth_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::AUTH_TYPE] = v;
    }

    /// v2: Adver Int (seconds).
    pub fn set_adver_int(&mut self, secs: u8) {
        self.buffer.as_mut()[field::ADVER_INT] = secs;
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Write the `i`-th address (4 or 16 bytes depending on its family).
    pub fn set_addr(&mut self, i: usize, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => {
                let at = field::ADDRESSES + i * 4;
                self.buffer.as_mut()[at..at + 4].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                let at = field::ADDRESSES + i * 16;
                self.buffer.as_mut()[at..at + 16].copy_from_slice(&a.octets());
            }
        }
    }

    /// v2: write the auth data after `addr_count()` IPv4 addresses.
    pub fn set_auth_data(&mut self, data: [u8; 8]) {
        let at = field::ADDRESSES + usize::from(self.addr_count()) * 4;
        self.buffer.as_mut()[at..at + AUTH_LEN].copy_from_slice(&data);
    }

    /// Compute and store the checksum over the whole buffer.
    pub fn fill_checksum(&mut self, version: Version, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let sum = checksum(version, src, dst, self.buffer.as_ref())
            .expect("VRRP emit: src and dst must be the same address family");
        self.set_checksum(sum);
    }
}

// ---------------------------------------------------------------------------
// Repr
// ---------------------------------------------------------------------------

/// A parsed, validated VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repr {
    pub version: Version,
    pub kind: Kind,
    pub vrid: u8,
    /// 0 = the master is giving up, 255 = the address owner.
    pub priority: u8,
    /// v2 only; always `Auth::None` for v3.
    pub auth: Auth,
    /// Advertisement interval in centiseconds (v2: seconds × 100). Non-zero.
    pub advert_interval: u16,
    /// The virtual addresses, all of the family of the IP header.
    pub addresses: Vec<IpAddr>,
}

impl Repr {
    /// Parse and validate a received message. `src`/`dst` are the IP header's
    /// addresses (needed for the v3 checksum and to know the address family);
    /// `packet` must span exactly the IP payload. Never panics.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&T>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Repr> {
        if packet.as_bytes().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let version = Version::from_number(packet.version()).ok_or(Error::BadVersion)?;
        if packet.msg_type() != TYPE_ADVERTISEMENT {
            return Err(Error::BadType);
        }
        let family = Family::of(src, dst)?;
        if version == Version::V2 && family == Family::V6 {
            return Err(Error::BadVersion);
        }
        packet.check_len(family)?;
        if packet.addr_count() == 0 {
            return Err(Error::NoAddresses);
        }
        if !packet.verify_checksum(src, dst) {
            return Err(Error::BadChecksum);
        }
        let (advert_interval, auth) = match version {
            Version::V3 => (packet.max_adver_int(), Auth::None),
            Version::V2 => {
                let auth = match packet.auth_type() {
                    0 => Auth::None,
                    1 => Auth::Simple(packet.auth_data()),
                    _ => return Err(Error::BadAuthType),
                };
                (u16::from(packet.adver_int()) * 100, auth)
            }
        };
        if advert_interval == 0 {
            return Err(Error::BadInterval);
        }
        let count = usize::from(packet.addr_count());
        let addresses = match family {
            Family::V4 => (0..count).map(|i| IpAddr::V4(packet.addr_v4(i))).collect(),
            Family::V6 => (0..count).map(|i| IpAddr::V6(packet.addr_v6(i))).collect(),
        };
        Ok(Repr {
            version,
            kind: Kind::Advertisement,
            vrid: packet.vrid(),
            priority: packet.priority(),
            auth,
            advert_interval,
            addresses,
        })
    }

    /// Length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        let auth = match self.version {
            Version::V2 => AUTH_LEN,
            Version::V3 => 0,
        };
        let addrs: usize = self
            .addresses
            .iter()
            .take(255)
            .map(|a| if a.is_ipv4() { 4 } else { 16 })
            .sum();
        HEADER_LEN + addrs + auth
    }

    /// Write the message into `packet`, whose buffer must be exactly
    /// [`Repr::buffer_len`] bytes (the checksum covers the whole buffer).
    ///
    /// The interval is clamped to what the version can carry (v3: 1..=4095 cs;
    /// v2: whole seconds 1..=255, rounded down). At most 255 addresses are written.
    ///
    /// # Panics
    /// If the buffer is shorter than `buffer_len()`, or `src` and `dst` are of
    /// different families: both are programming errors of the caller.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: IpAddr,
        dst: IpAddr,
    ) {
        let count = self.addresses.len().min(255);
        packet.set_version_type(self.version.number(), TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_addr_count(count as u8);
        match self.version {
            Version::V3 => {
                packet.set_max_adver_int(self.advert_interval.clamp(1, V3_MAX_INTERVAL_CS));
            }
            Version::V2 => {
                let (auth_type, _) = self.auth_fields();
                packet.set_auth_type(auth_type);
                packet.set_adver_int((self.advert_interval / 100).clamp(1, 255) as u8);
            }
        }
        for (i, a) in self.addresses.iter().take(count).enumerate() {
            packet.set_addr(i, *a);
        }
        if self.version == Version::V2 {
            packet.set_auth_data(self.auth_fields().1);
        }
        packet.fill_checksum(self.version, src, dst);
    }

    /// Emit into a fresh `Vec` (adverts are rare; convenient for drivers).
    pub fn to_bytes(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]), src, dst);
        buf
    }

    fn auth_fields(&self) -> (u8, [u8; 8]) {
        match self.auth {
            Auth::None => (0, [0; 8]),
            Auth::Simple(d) => (1, d),
        }
    }
}

// ---------------------------------------------------------------------------
// IP envelope
// ---------------------------------------------------------------------------

/// Whether a received advert's TTL / hop limit is acceptable. RFC 5798
/// §7.1 asks for 255: proof the packet was not routed, so nobody off the
/// link can forge one. An advert addressed to this router itself (not to
/// the group) by one of the instance's configured `unicast_peers`
/// (`from_unicast_peer`) is accepted with any: unicast VRRP is keepalived's
/// extension, its peers may sit behind a router, and keepalived 2.2.7 sends
/// IPv6 unicast adverts with the default hop limit (64) and checks none on
/// unicast itself; there the peer list is what decides whom to believe.
pub fn hops_ok(ttl: u8, dst: IpAddr, from_unicast_peer: bool) -> bool {
    ttl == TTL || (from_unicast_peer && !dst.is_multicast())
}

/// A received IPv4 datagram carrying VRRP, split into what `Repr::parse` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Envelope<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    /// The IP payload (the VRRP message), trimmed to the IP total length.
    pub payload: &'a [u8],
}

/// A received VRRP message of either family with the IP facts validation
/// needs: what the driver hands to [`Repr::parse`] and the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6), for [`hops_ok`].
    pub ttl: u8,
    pub payload: &'a [u8],
}

impl<'a> From<Ipv4Envelope<'a>> for Envelope<'a> {
    fn from(e: Ipv4Envelope<'a>) -> Envelope<'a> {
        Envelope {
            src: IpAddr::V4(e.src),
            dst: IpAddr::V4(e.dst),
            ttl: e.ttl,
            payload: e.payload,
        }
    }
}

/// An IPv6 raw socket delivers only the payload; source, destination and
/// hop limit come as the peer address and ancillary data (`IPV6_PKTINFO`,
/// `IPV6_HOPLIMIT`). A missing hop limit cannot be checked, so it counts as
/// a bad one; a missing destination as a bad IP header (the v3 checksum
/// covers it). The hop limit's value is judged by [`hops_ok`].
pub fn envelope_v6(
    src: Ipv6Addr,
    dst: Option<Ipv6Addr>,
    hop_limit: Option<u8>,
    payload: &[u8],
) -> Result<Envelope<'_>> {
    let ttl = hop_limit.ok_or(Error::BadTtl)?;
    let dst = dst.ok_or(Error::BadIpHeader)?;
    Ok(Envelope {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        ttl,
        payload,
    })
}

/// Split a whole IPv4 datagram (as an IPv4 raw socket delivers it, header
/// included), checking version, header length, total length and protocol
/// 112 (the TTL is judged by [`hops_ok`]). Never panics.
pub fn parse_ipv4(bytes: &[u8]) -> Result<Ipv4Envelope<'_>> {
    use pnet_packet::ipv4::Ipv4Packet;
    let ip = Ipv4Packet::new(bytes).ok_or(Error::BadIpHeader)?;
    let ihl = usize::from(ip.get_header_length()) * 4;
    let total = usize::from(ip.get_total_length());
    if ip.get_version() != 4 || ihl < 20 || total < ihl || total > bytes.len() {
        return Err(Error::BadIpHeader);
    }
    if ip.get_next_level_protocol().0 != PROTOCOL {
        return Err(Error::BadProtocol);
    }
    Ok(Ipv4Envelope {
        src: ip.get_source(),
        dst: ip.get_destination(),
        ttl: ip.get_ttl(),
        payload: &bytes[ihl..total],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const DST: IpAddr = IpAddr::V4(MULTICAST_V4);

    fn hex(s: &str) -> Vec<u8> {
        let s = s.trim();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/vrrp/{}.hex",
            env!("CARGO_MANIFEST_DIR"),
            name
        );
        hex(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    /// Parse a keepalived capture: IP envelope, then VRRP, then re-emit and
    /// compare byte for byte.
    fn roundtrip_fixture(name: &str) -> Repr {
        let bytes = fixture(name);
        let env = parse_ipv4(&bytes).unwrap();
        assert_eq!(env.src, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(env.dst, MULTICAST_V4);
        assert_eq!(env.ttl, 255);
        let (src, dst) = (IpAddr::V4(env.src), IpAddr::V4(env.dst));
        let pkt = Packet::new_checked(env.payload).unwrap();
        let repr = Repr::parse(&pkt, src, dst).unwrap();
        assert_eq!(repr.buffer_len(), env.payload.len());
        assert_eq!(
            repr.to_bytes(src, dst),
            env.payload,
            "{name} re-emit differs"
        );
        repr
    }

    #[test]
    fn keepalived_v3_advert() {
        let r = roundtrip_fixture("keepalived_v3_advert");
        assert_eq!(
            r,
            Repr {
                version: Version::V3,
                kind: Kind::Advertisement,
                vrid: 51,
                priority: 100,
                auth: Auth::None,
                advert_interval: 100,
                addresses: vec![v4(198, 18, 0, 100)],
            }
        );
    }

    #[test]
    fn keepalived_v3_shutdown_is_priority_zero() {
        let r = roundtrip_fixture("keepalived_v3_shutdown");
        assert_eq!(r.priority, 0);
        assert_eq!(r.vrid, 51);
        assert_eq!(r.addresses, vec![v4(198, 18, 0, 100)]);
    }

    #[test]
    fn keepalived_v2_pass_advert() {
        let r = roundtrip_fixture("keepalived_v2_pass_advert");
        assert_eq!(
            r,
            Repr {
                version: Version::V2,
                kind: Kind::Advertisement,
                vrid: 51,
                priority: 100,
                auth: Auth::simple("mypasswd"),
                advert_interval: 100,
                addresses: vec![v4(198, 18, 0, 100)],
            }
        );
        let r0 = roundtrip_fixture("keepalived_v2_pass_shutdown");
        assert_eq!(r0.priority, 0);
        assert_eq!(r0.auth, Auth::simple("mypasswd"));
    }

    #[test]
    fn keepalived_v3_fast_two_vips() {
        let r = roundtrip_fixture("keepalived_v3_fast_advert");
        assert_eq!(r.advert_interval, 10);
        assert_eq!(r.addresses, vec![v4(198, 18, 0, 100), v4(198, 18, 0, 101)]);
        let r0 = roundtrip_fixture("keepalived_v3_fast_shutdown");
        assert_eq!(r0.priority, 0);
        assert_eq!(r0.advert_interval, 10);
    }

    #[test]
    fn v3_checksum_uses_pseudo_header_v2_does_not() {
        let bytes = fixture("keepalived_v3_advert");
        let env = parse_ipv4(&bytes).unwrap();
        let pkt = Packet::new_checked(env.payload).unwrap();
        // Another source address changes the v3 pseudo-header → checksum fails.
        assert_eq!(
            Repr::parse(&pkt, v4(198, 18, 0, 2), DST),
            Err(Error::BadChecksum)
        );
        let bytes = fixture("keepalived_v2_pass_advert");
        let env = parse_ipv4(&bytes).unwrap();
        let pkt = Packet::new_checked(env.payload).unwrap();
        // v2 ignores IP addresses in its checksum.
        assert!(Repr::parse(&pkt, v4(198, 18, 0, 2), DST).is_ok());
    }

    /// Hand-written v3 advert, checksum computed by hand:
    /// words 0x3133 0x6401 0x0064 0x0000 0xc612 0x0064 plus pseudo-header
    /// 0xc612 0x0001 0xe000 0x0012 0x0070 0x000c.
    #[test]
    fn v3_handwritten_checksum() {
        let words: [u32; 12] = [
            0x3133, 0x6401, 0x0064, 0xc612, 0x0064, 0xc612, 0x0001, 0xe000, 0x0012, 0x0070, 0x000c,
            0,
        ];
        let sum: u32 = words.iter().sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        let expect = !(folded as u16);
        let mut msg = [0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0, 0, 198, 18, 0, 100];
        let got = checksum_v3(SRC, DST, &msg).unwrap();
        assert_eq!(got, expect);
        msg[6..8].copy_from_slice(&got.to_be_bytes());
        assert_eq!(checksum_v3(SRC, DST, &msg), Ok(0));
    }

    #[test]
    fn odd_length_checksum_pads_with_zero() {
        assert_eq!(sum_words(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(finish(0x1_fffe), !0xffffu16);
    }

    fn sample_v3() -> Repr {
        Repr {
            version: Version::V3,
            kind: Kind::Advertisement,
            vrid: 7,
            priority: 200,
            auth: Auth::None,
            advert_interval: 100,
            addresses: vec![v4(198, 18, 0, 100)],
        }
    }

    fn parse_bytes(b: &[u8], src: IpAddr, dst: IpAddr) -> Result<Repr> {
        let p = Packet::new_checked(b)?;
        Repr::parse(&p, src, dst)
    }

    #[test]
    fn drop_reasons() {
        let good = sample_v3().to_bytes(SRC, DST);
        assert!(parse_bytes(&good, SRC, DST).is_ok());

        assert_eq!(parse_bytes(&good[..7], SRC, DST), Err(Error::Truncated));
        assert_eq!(parse_bytes(&good[..11], SRC, DST), Err(Error::Truncated));
        let mut long = good.clone();
        long.extend_from_slice(&[0, 0]);
        assert_eq!(parse_bytes(&long, SRC, DST), Err(Error::BadLength));

        let mut b = good.clone();
        b[0] = 0x41;
        assert_eq!(parse_bytes(&b, SRC, DST), Err(Error::BadVersion));
        let mut b = good.clone();
        b[0] = 0x32;
        assert_eq!(parse_bytes(&b, SRC, DST), Err(Error::BadType));
        let mut b = good.clone();
        b[2] ^= 1;
        assert_eq!(parse_bytes(&b, SRC, DST), Err(Error::BadChecksum));

        // count 0 with no addresses: a correctly sized, checksummed message.
        let mut b = vec![0x31, 7, 200, 0, 0, 100, 0, 0];
        let c = checksum_v3(SRC, DST, &b).unwrap();
        b[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_bytes(&b, SRC, DST), Err(Error::NoAddresses));

        let mut r = sample_v3();
        r.advert_interval = 0;
        let mut b = r.to_bytes(SRC, DST);
        b[4..6].copy_from_slice(&[0xf0, 0x00]); // reserved bits set, interval 0
        b[6..8].copy_from_slice(&[0, 0]);
        let c = checksum_v3(SRC, DST, &b).unwrap();
        b[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_bytes(&b, SRC, DST), Err(Error::BadInterval));

        let v6 = IpAddr::V6(MULTICAST_V6);
        assert_eq!(parse_bytes(&good, SRC, v6), Err(Error::BadFamily));

        let mut v2 = Repr {
            version: Version::V2,
            auth: Auth::simple("pw"),
            ..sample_v3()
        }
        .to_bytes(SRC, DST);
        v2[4] = 2; // IP AH auth: unsupported
        v2[6..8].copy_from_slice(&[0, 0]);
        let c = checksum_v2(&v2);
        v2[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_bytes(&v2, SRC, DST), Err(Error::BadAuthType));
    }

    #[test]
    fn v3_reserved_bits_ignored_on_parse() {
        let mut b = sample_v3().to_bytes(SRC, DST);
        b[4] |= 0xf0;
        b[6..8].copy_from_slice(&[0, 0]);
        let c = checksum_v3(SRC, DST, &b).unwrap();
        b[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_bytes(&b, SRC, DST).unwrap().advert_interval, 100);
    }

    #[test]
    fn v2_over_ipv6_rejected() {
        let r = Repr {
            version: Version::V2,
            addresses: vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
            ..sample_v3()
        };
        let s6 = IpAddr::V6("fe80::1".parse().unwrap());
        let d6 = IpAddr::V6(MULTICAST_V6);
        let b = r.to_bytes(s6, d6);
        assert_eq!(parse_bytes(&b, s6, d6), Err(Error::BadVersion));
    }

    #[test]
    fn v3_ipv6_roundtrip() {
        let s6 = IpAddr::V6("fe80::1".parse().unwrap());
        let d6 = IpAddr::V6(MULTICAST_V6);
        let r = Repr {
            addresses: vec![IpAddr::V6("fe80::100".parse().unwrap())],
            ..sample_v3()
        };
        let b = r.to_bytes(s6, d6);
        assert_eq!(b.len(), 8 + 16);
        assert_eq!(parse_bytes(&b, s6, d6), Ok(r));
        // Read as IPv4 the lengths disagree.
        assert_eq!(parse_bytes(&b, SRC, DST), Err(Error::BadLength));
    }

    /// keepalived 2.2.7's VRRPv3 IPv6 advert (whole IPv6 packet: vrid 52,
    /// priority 200, 10 cs, VIP 2001:2::100, from its link-local address to
    /// ff02::12) parses through the IPv6 envelope and re-emits byte for byte.
    #[test]
    fn keepalived_v3_ipv6_advert() {
        let bytes = fixture("keepalived_v3_ipv6_advert");
        assert_eq!(bytes[0] >> 4, 6);
        assert_eq!(bytes[6], PROTOCOL);
        let addr = |o: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[o..o + 16]).unwrap());
        let (src, dst) = (addr(8), addr(24));
        assert_eq!(src, "fe80::ff:fe00:a".parse::<Ipv6Addr>().unwrap());
        assert_eq!(dst, MULTICAST_V6);
        let env = envelope_v6(src, Some(dst), Some(bytes[7]), &bytes[40..]).unwrap();
        let repr =
            Repr::parse(&Packet::new_checked(env.payload).unwrap(), env.src, env.dst).unwrap();
        assert_eq!(
            (repr.vrid, repr.priority, repr.advert_interval),
            (52, 200, 10)
        );
        assert_eq!(
            repr.addresses,
            vec![IpAddr::V6("2001:2::100".parse().unwrap())]
        );
        assert_eq!(repr.to_bytes(env.src, env.dst), env.payload);
        // The checksum covers the pseudo-header: another source breaks it.
        let other = IpAddr::V6("fe80::ff:fe00:b".parse().unwrap());
        let pkt = Packet::new_checked(env.payload).unwrap();
        assert_eq!(Repr::parse(&pkt, other, env.dst), Err(Error::BadChecksum));
    }

    #[test]
    fn ipv6_envelope_checks() {
        let (s, d) = (Ipv6Addr::LOCALHOST, MULTICAST_V6);
        assert_eq!(envelope_v6(s, Some(d), Some(255), &[]).unwrap().ttl, 255);
        assert_eq!(envelope_v6(s, Some(d), Some(1), &[]).unwrap().ttl, 1);
        assert_eq!(envelope_v6(s, Some(d), None, &[]), Err(Error::BadTtl));
        assert_eq!(
            envelope_v6(s, None, Some(255), &[]),
            Err(Error::BadIpHeader)
        );
    }

    #[test]
    fn ip_envelope_checks() {
        let good = fixture("keepalived_v3_advert");
        assert!(parse_ipv4(&good).is_ok());
        let mut b = good.clone();
        b[8] = 64; // TTL: carried for hops_ok
        assert_eq!(parse_ipv4(&b).unwrap().ttl, 64);
        let mut b = good.clone();
        b[9] = 17; // UDP
        assert_eq!(parse_ipv4(&b), Err(Error::BadProtocol));
        assert_eq!(parse_ipv4(&good[..19]), Err(Error::BadIpHeader));
        let mut b = good.clone();
        b[0] = 0x44; // IHL 4
        assert_eq!(parse_ipv4(&b), Err(Error::BadIpHeader));
        let mut b = good.clone();
        b[3] = 0xff; // total length past the buffer
        assert_eq!(parse_ipv4(&b), Err(Error::BadIpHeader));
        // Trailing link-layer padding is trimmed by the total length.
        let mut b = good.clone();
        b.extend_from_slice(&[0; 6]);
        assert_eq!(parse_ipv4(&b).unwrap().payload.len(), good.len() - 20);
    }

    /// TTL / hop limit 255 always; anything else only when sent to us (not
    /// the group) by a configured unicast peer.
    #[test]
    fn hops_ok_table() {
        let me = v4(198, 18, 0, 2);
        let me6 = IpAddr::V6("2001:2::2".parse().unwrap());
        let group6 = IpAddr::V6(MULTICAST_V6);
        let cases = [
            // (ttl, dst, from a unicast peer, accepted)
            (255, DST, false, true),
            (255, me, false, true),
            (255, me, true, true),
            (254, DST, false, false),
            (64, me, false, false),
            (64, me, true, true),
            (1, me6, true, true),
            (64, DST, true, false),
            (64, group6, true, false),
            (0, me6, false, false),
        ];
        for (ttl, dst, peer, want) in cases {
            assert_eq!(hops_ok(ttl, dst, peer), want, "{ttl} {dst} {peer}");
        }
    }

    #[test]
    fn error_index_is_dense() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }

    fn arb_repr() -> impl Strategy<Value = (Repr, IpAddr, IpAddr)> {
        let v4_case = (
            any::<bool>(),
            any::<u8>(),
            any::<u8>(),
            any::<Option<[u8; 8]>>(),
            1u16..=4095,
            1u8..=255,
            prop::collection::vec(any::<u32>(), 1..20),
            any::<u32>(),
        )
            .prop_map(|(is_v2, vrid, prio, pw, cs, secs, addrs, src)| {
                let version = if is_v2 { Version::V2 } else { Version::V3 };
                let (auth, advert_interval) = if is_v2 {
                    (pw.map_or(Auth::None, Auth::Simple), u16::from(secs) * 100)
                } else {
                    (Auth::None, cs)
                };
                let repr = Repr {
                    version,
                    kind: Kind::Advertisement,
                    vrid,
                    priority: prio,
                    auth,
                    advert_interval,
                    addresses: addrs.into_iter().map(|a| IpAddr::V4(a.into())).collect(),
                };
                (repr, IpAddr::V4(src.into()), DST)
            });
        let v6_case = (
            any::<u8>(),
            any::<u8>(),
            1u16..=4095,
            prop::collection::vec(any::<u128>(), 1..8),
            any::<u128>(),
        )
            .prop_map(|(vrid, prio, cs, addrs, src)| {
                let repr = Repr {
                    version: Version::V3,
                    kind: Kind::Advertisement,
                    vrid,
                    priority: prio,
                    auth: Auth::None,
                    advert_interval: cs,
                    addresses: addrs.into_iter().map(|a| IpAddr::V6(a.into())).collect(),
                };
                (repr, IpAddr::V6(src.into()), IpAddr::V6(MULTICAST_V6))
            });
        prop_oneof![v4_case, v6_case]
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200),
                              src in any::<u32>(), six in any::<bool>()) {
            let (s, d) = if six {
                (IpAddr::V6(u128::from(src).into()), IpAddr::V6(MULTICAST_V6))
            } else {
                (IpAddr::V4(src.into()), DST)
            };
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = Repr::parse(&p, s, d);
            }
            let _ = parse_ipv4(&bytes);
        }

        /// Mostly-valid bytes reach the deeper checks too: a valid header with
        /// a random tail and a fixed-up checksum.
        #[test]
        fn parse_never_panics_valid_header(ver in 0u8..5, count in any::<u8>(),
                                           tail in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut b = vec![(ver << 4) | 1, 1, 100, count, 0, 100, 0, 0];
            b.extend_from_slice(&tail);
            if let Ok(c) = checksum_v3(SRC, DST, &b) {
                b[6..8].copy_from_slice(&c.to_be_bytes());
            }
            let p = Packet::new_checked(&b[..]).unwrap();
            let _ = Repr::parse(&p, SRC, DST);
        }

        #[test]
        fn emit_parse_roundtrip((repr, src, dst) in arb_repr()) {
            let bytes = repr.to_bytes(src, dst);
            prop_assert_eq!(bytes.len(), repr.buffer_len());
            let p = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p, src, dst), Ok(repr));
        }

        #[test]
        fn any_bit_flip_is_detected((repr, src, dst) in arb_repr(), bit in any::<prop::sample::Index>()) {
            let mut bytes = repr.to_bytes(src, dst);
            let i = bit.index(bytes.len() * 8);
            bytes[i / 8] ^= 1 << (i % 8);
            let p = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_ne!(Repr::parse(&p, src, dst), Ok(repr));
        }
    }
}
