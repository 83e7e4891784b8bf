//! IP prefixes and ranges in the spellings Tailscale's control plane uses on the wire.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network: an address family and an inclusive range of addresses, as `u128`s (IPv4 in
/// the low 32 bits). Prefixes keep their length so they print as `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    pub v6: bool,
    pub first: u128,
    pub last: u128,
    /// `Some(bits)` for a CIDR prefix, `None` for an arbitrary range.
    pub bits: Option<u8>,
}

fn to_u128(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

fn from_u128(v6: bool, value: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(value))
    } else {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    }
}

impl Net {
    pub fn addr(ip: IpAddr) -> Net {
        let (v6, value) = to_u128(ip);
        Net {
            v6,
            first: value,
            last: value,
            bits: Some(if v6 { 128 } else { 32 }),
        }
    }

    /// A prefix from an address and a length; host bits are masked off, as Tailscale does.
    pub fn prefix(ip: IpAddr, bits: u8) -> Option<Net> {
        let (v6, value) = to_u128(ip);
        let width: u32 = if v6 { 128 } else { 32 };
        if u32::from(bits) > width {
            return None;
        }
        let host_bits = width - u32::from(bits);
        let host_mask: u128 = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let first = value & !host_mask;
        Some(Net {
            v6,
            first,
            last: first | host_mask,
            bits: Some(bits),
        })
    }

    pub fn range(first: IpAddr, last: IpAddr) -> Option<Net> {
        let (v6a, a) = to_u128(first);
        let (v6b, b) = to_u128(last);
        (v6a == v6b && a <= b).then_some(Net {
            v6: v6a,
            first: a,
            last: b,
            bits: None,
        })
    }

    /// Parses `1.2.3.4`, `1.2.3.0/24`, `fd7a::1`, `fd7a::/48`.
    pub fn parse(text: &str) -> Option<Net> {
        match text.split_once('/') {
            None => text.parse::<IpAddr>().ok().map(Net::addr),
            Some((ip, bits)) => {
                if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Net::prefix(ip.parse().ok()?, bits.parse().ok()?)
            }
        }
    }

    pub fn is_single(&self) -> bool {
        self.first == self.last
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        let (v6, value) = to_u128(ip);
        v6 == self.v6 && self.first <= value && value <= self.last
    }

    pub fn covers(&self, other: &Net) -> bool {
        self.v6 == other.v6 && self.first <= other.first && other.last <= self.last
    }

    pub fn overlaps(&self, other: &Net) -> bool {
        self.v6 == other.v6 && self.first <= other.last && other.first <= self.last
    }

    /// `0.0.0.0/0` or `::/0`.
    pub fn is_all(&self) -> bool {
        self.bits == Some(0)
    }

    pub fn first_ip(&self) -> IpAddr {
        from_u128(self.v6, self.first)
    }

    /// The wire spelling with the length always shown (`1.2.3.4/32`), as in `CapGrant.Dsts`.
    pub fn cidr_string(&self) -> String {
        match self.bits {
            Some(bits) => format!("{}/{bits}", self.first_ip()),
            None => self.to_string(),
        }
    }
}

impl fmt::Display for Net {
    /// Bare address for a single address, `a/n` for a prefix, `a-b` for a range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bits {
            Some(_) if self.is_single() => write!(f, "{}", self.first_ip()),
            Some(bits) => write!(f, "{}/{bits}", self.first_ip()),
            None => write!(f, "{}-{}", self.first_ip(), from_u128(self.v6, self.last)),
        }
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> u128 {
    u32::from(Ipv4Addr::new(a, b, c, d)) as u128
}

fn v4_range(first: u128, last: u128) -> Net {
    Net {
        v6: false,
        first,
        last,
        bits: None,
    }
}

/// What `*` means as a source: the tailnet's address space (CGNAT without Tailscale's reserved
/// 100.115.92.0/23, and Tailscale's ULA prefix), in the control plane's spelling.
pub fn tailnet_space() -> [Net; 3] {
    [
        v4_range(v4(100, 64, 0, 0), v4(100, 115, 91, 255)),
        v4_range(v4(100, 115, 94, 0), v4(100, 127, 255, 255)),
        Net {
            v6: true,
            first: u128::from(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0)),
            last: u128::from(Ipv6Addr::new(
                0xfd7a, 0x115c, 0xa1e0, 0, 0xffff, 0xffff, 0xffff, 0xffff,
            )),
            bits: Some(48),
        },
    ]
}

/// `autogroup:internet`: public IPv4 (everything but 10/8, 100.64/10, 169.254/16, 172.16/12,
/// 192.168/16) as ranges, plus 2000::/3.
pub fn internet() -> Vec<Net> {
    let mut nets = vec![
        v4_range(v4(0, 0, 0, 0), v4(9, 255, 255, 255)),
        v4_range(v4(11, 0, 0, 0), v4(100, 63, 255, 255)),
        v4_range(v4(100, 128, 0, 0), v4(169, 253, 255, 255)),
        v4_range(v4(169, 255, 0, 0), v4(172, 15, 255, 255)),
        v4_range(v4(172, 32, 0, 0), v4(192, 167, 255, 255)),
        v4_range(v4(192, 169, 0, 0), v4(255, 255, 255, 255)),
    ];
    if let Some(v6) = Net::parse("2000::/3") {
        nets.push(v6);
    }
    nets
}

/// Is this one of the CGNAT or ULA addresses Tailscale hands to nodes?
pub fn is_tailnet_ip(ip: IpAddr) -> bool {
    tailnet_space().iter().any(|n| n.contains_ip(ip))
}
