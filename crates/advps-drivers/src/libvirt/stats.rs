//! Usage readings from libvirt's bulk domain statistics, `virsh domstats`:
//! one call answers for every domain of the node (the sampler's round) or
//! for the domains it names (one status). Its output is `Domain: 'NAME'`
//! blocks of `key=value` lines; the groups asked for are [`GROUPS`].
//!
//! Where each figure comes from, and what it means:
//! - **CPU**: `cpu.time`, the nanoseconds of host CPU the domain used since
//!   its QEMU process started (cumulative: the server turns two readings
//!   into a percent of `vcpu.current` cores).
//! - **Memory used**: the guest's own view when its balloon driver reports
//!   statistics (`<memballoon model='virtio'><stats period='N'/>`):
//!   `balloon.available - balloon.usable` (MemTotal - MemAvailable, what
//!   `free` calls used), or `available - unused` (MemTotal - MemFree) from a
//!   guest too old to report `usable`. Without balloon statistics, the QEMU
//!   process's resident memory `balloon.rss`: what the guest occupies on the
//!   host, QEMU's own memory included. Neither: `None`.
//! - **Memory total**: `balloon.current` (the memory the domain has now),
//!   else `balloon.maximum`.
//! - **Disk**: the sum over the domain's disks except NoCloud seeds (ISO
//!   images, volumes named `...seed...`): used is `block.N.allocation`, the
//!   bytes the volume occupies on the host (for a copy-on-write overlay, what
//!   the guest wrote since its image), falling back to `block.N.physical`;
//!   total is `block.N.capacity`, the size the guest sees. libvirt cannot see
//!   inside the guest's file systems.
//! - **Network**: `net.N.rx.bytes` / `net.N.tx.bytes` of every interface,
//!   counted since the domain started.
//!
//! A domain that is not running uses nothing: 0 CPU, memory, traffic; its
//! totals and its disks' allocation stay.

use crate::UsageReading;

/// The statistics groups a usage reading needs (and the inventory's state
/// and memory), with `--nowait`: a figure that needs the domain's job
/// (the balloon's and the disks' statistics) is left out while another
/// call holds it (a shutdown, a hung guest agent), instead of waiting up to
/// libvirt's 30 s for it, so a status is never stuck behind another call.
pub const GROUPS: &[&str] = &[
    "--nowait",
    "--state",
    "--cpu-total",
    "--balloon",
    "--vcpu",
    "--interface",
    "--block",
];

/// `Domain: 'NAME'` blocks of `virsh domstats`, as (name, key=value pairs).
pub fn parse_domstats(raw: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in raw.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("Domain: ") {
            out.push((name.trim_matches(['\'', '"']).to_string(), Vec::new()));
        } else if let (Some((key, value)), Some(last)) = (line.split_once('='), out.last_mut()) {
            last.1.push((key.to_string(), value.to_string()));
        }
    }
    out
}

/// Where a reading's memory figure came from (for the logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// The guest's balloon statistics: MemTotal - MemAvailable.
    GuestAvailable,
    /// The guest's balloon statistics: MemTotal - MemFree.
    GuestFree,
    /// The QEMU process's resident memory on the host.
    HostResident,
    /// Nothing reported.
    Unknown,
}

/// One domain's statistics, by key.
pub struct Stats<'a> {
    values: &'a [(String, String)],
}

impl<'a> Stats<'a> {
    pub fn new(values: &'a [(String, String)]) -> Stats<'a> {
        Stats { values }
    }

    fn text(&self, key: &str) -> Option<&'a str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn number(&self, key: &str) -> Option<u64> {
        self.text(key).and_then(|v| v.trim().parse::<u64>().ok())
    }

    /// `state.state`: libvirt's virDomainState (1 running, 5 shut off, ...).
    pub fn state(&self) -> Option<i64> {
        self.text("state.state")
            .and_then(|v| v.trim().parse::<i64>().ok())
    }

    /// Running, blocked or being shut down: the guest is there and counts.
    pub fn running(&self) -> bool {
        matches!(self.state(), Some(1 | 2 | 4))
    }

    /// Memory in use, in bytes, and where it came from.
    pub fn memory_used(&self) -> (Option<u64>, MemorySource) {
        let kib = |v: u64| v.saturating_mul(1024);
        if let Some(available) = self.number("balloon.available") {
            if let Some(usable) = self.number("balloon.usable") {
                return (
                    Some(kib(available.saturating_sub(usable))),
                    MemorySource::GuestAvailable,
                );
            }
            if let Some(unused) = self.number("balloon.unused") {
                return (
                    Some(kib(available.saturating_sub(unused))),
                    MemorySource::GuestFree,
                );
            }
        }
        match self.number("balloon.rss") {
            Some(rss) => (Some(kib(rss)), MemorySource::HostResident),
            None => (None, MemorySource::Unknown),
        }
    }

    /// The indexes `0..count` of a `PREFIX.count` group.
    fn indexes(&self, prefix: &str) -> std::ops::Range<u64> {
        0..self.number(&format!("{prefix}.count")).unwrap_or(0)
    }

    /// Whether block device `i` is a NoCloud seed rather than a disk.
    fn is_seed(&self, i: u64) -> bool {
        let path = self.text(&format!("block.{i}.path")).unwrap_or_default();
        let file = path.rsplit('/').next().unwrap_or(path);
        file.ends_with(".iso") || file.contains("seed")
    }

    /// (used, total) over the domain's disks, in bytes.
    pub fn disk(&self) -> (Option<u64>, Option<u64>) {
        let (mut used, mut total) = (None::<u64>, None::<u64>);
        for i in self.indexes("block").filter(|i| !self.is_seed(*i)) {
            let allocation = self
                .number(&format!("block.{i}.allocation"))
                .or_else(|| self.number(&format!("block.{i}.physical")));
            if let Some(a) = allocation {
                used = Some(used.unwrap_or(0).saturating_add(a));
            }
            if let Some(c) = self.number(&format!("block.{i}.capacity")) {
                total = Some(total.unwrap_or(0).saturating_add(c));
            }
        }
        (used, total)
    }

    /// (received, sent) bytes over every interface.
    pub fn network(&self) -> (Option<u64>, Option<u64>) {
        let (mut rx, mut tx, mut counted) = (0u64, 0u64, false);
        for i in self.indexes("net") {
            if let (Some(r), Some(t)) = (
                self.number(&format!("net.{i}.rx.bytes")),
                self.number(&format!("net.{i}.tx.bytes")),
            ) {
                rx = rx.saturating_add(r);
                tx = tx.saturating_add(t);
                counted = true;
            }
        }
        if counted {
            (Some(rx), Some(tx))
        } else {
            (None, None)
        }
    }

    /// The usage reading of this domain.
    pub fn usage(&self) -> UsageReading {
        let running = self.running();
        let when_running = |v: Option<u64>| if running { v } else { Some(0) };
        let (disk_used, disk_total) = self.disk();
        let (rx, tx) = self.network();
        let kib = |v: u64| v.saturating_mul(1024);
        UsageReading {
            running,
            cores: self
                .number("vcpu.current")
                .or_else(|| self.number("vcpu.maximum"))
                .and_then(|n| u32::try_from(n).ok()),
            cpu_time_ns: when_running(self.number("cpu.time")),
            cpu_fraction: None,
            memory_used: when_running(self.memory_used().0),
            memory_total: self
                .number("balloon.current")
                .or_else(|| self.number("balloon.maximum"))
                .filter(|n| *n > 0)
                .map(kib),
            disk_used,
            disk_total,
            rx_bytes: when_running(rx),
            tx_bytes: when_running(tx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `virsh domstats --state --cpu-total --balloon --vcpu --interface
    /// --block` on libvirt 9.0 / QEMU 10.0: a running guest with balloon
    /// statistics, one without (rss only), and a shut-off one.
    const CAPTURED: &str = "\
Domain: 'advps-test-vm1'
  state.state=1
  state.reason=1
  cpu.time=48210554000
  cpu.user=39660000000
  cpu.system=7450000000
  cpu.cache.monitor.count=0
  balloon.current=786432
  balloon.maximum=786432
  balloon.swap_in=0
  balloon.swap_out=0
  balloon.major_fault=312
  balloon.minor_fault=90671
  balloon.unused=517388
  balloon.available=752852
  balloon.usable=608120
  balloon.last-update=1796187601
  balloon.disk_caches=84556
  balloon.hugetlb_pgalloc=0
  balloon.hugetlb_pgfail=0
  balloon.rss=441640
  vcpu.current=2
  vcpu.maximum=2
  vcpu.0.state=1
  vcpu.0.time=21230000000
  vcpu.0.wait=0
  vcpu.0.delay=0
  vcpu.1.state=1
  vcpu.1.time=19110000000
  vcpu.1.wait=0
  vcpu.1.delay=0
  net.count=1
  net.0.name=vnet3
  net.0.rx.bytes=10652
  net.0.rx.pkts=88
  net.0.rx.errs=0
  net.0.rx.drop=0
  net.0.tx.bytes=2310
  net.0.tx.pkts=27
  net.0.tx.errs=0
  net.0.tx.drop=0
  block.count=2
  block.0.name=vda
  block.0.path=/var/lib/libvirt/images/advps/advps-test-vm1-disk0.qcow2
  block.0.backingIndex=1
  block.0.rd.reqs=5020
  block.0.rd.bytes=151217152
  block.0.rd.times=2905010925
  block.0.wr.reqs=391
  block.0.wr.bytes=9134080
  block.0.wr.times=660301364
  block.0.fl.reqs=75
  block.0.fl.times=110403221
  block.0.allocation=12189696
  block.0.capacity=2147483648
  block.0.physical=12648448
  block.1.name=vdb
  block.1.path=/var/lib/libvirt/images/advps/advps-test-vm1-seed0.iso
  block.1.rd.reqs=40
  block.1.rd.bytes=380928
  block.1.allocation=0
  block.1.capacity=376832
  block.1.physical=376832

Domain: 'plain'
  state.state=1
  state.reason=1
  cpu.time=1000
  balloon.current=524288
  balloon.maximum=1048576
  balloon.rss=301112
  vcpu.current=1
  vcpu.maximum=4
  net.count=0
  block.count=1
  block.0.name=vda
  block.0.path=/var/lib/libvirt/images/plain.qcow2
  block.0.capacity=10737418240
  block.0.physical=3221225472

Domain: 'off'
  state.state=5
  state.reason=1
  balloon.current=786432
  balloon.maximum=786432
  vcpu.current=2
  vcpu.maximum=2
  block.count=1
  block.0.name=vda
  block.0.path=/var/lib/libvirt/images/advps/off-disk0.qcow2
  block.0.allocation=8650752
  block.0.capacity=2147483648
  block.0.physical=8650752
";

    fn reading(name: &str) -> (UsageReading, MemorySource) {
        let all = parse_domstats(CAPTURED);
        let (_, values) = all.iter().find(|(n, _)| n == name).expect(name);
        let stats = Stats::new(values);
        (stats.usage(), stats.memory_used().1)
    }

    #[test]
    fn a_guest_with_balloon_statistics_reports_its_own_memory() {
        let (usage, source) = reading("advps-test-vm1");
        assert_eq!(source, MemorySource::GuestAvailable);
        assert!(usage.running);
        assert_eq!(usage.cores, Some(2));
        assert_eq!(usage.cpu_time_ns, Some(48_210_554_000));
        assert_eq!(usage.cpu_fraction, None);
        assert_eq!(usage.memory_used, Some((752_852 - 608_120) * 1024));
        assert_eq!(usage.memory_total, Some(786_432 * 1024));
        // The seed is not a disk of the guest.
        assert_eq!(usage.disk_used, Some(12_189_696));
        assert_eq!(usage.disk_total, Some(2_147_483_648));
        assert_eq!(
            (usage.rx_bytes, usage.tx_bytes),
            (Some(10_652), Some(2_310))
        );
    }

    #[test]
    fn without_balloon_statistics_memory_is_the_hosts_resident_size() {
        let (usage, source) = reading("plain");
        assert_eq!(source, MemorySource::HostResident);
        assert_eq!(usage.memory_used, Some(301_112 * 1024));
        assert_eq!(usage.memory_total, Some(524_288 * 1024));
        assert_eq!(usage.cores, Some(1));
        // No allocation reported: the file's size on the host.
        assert_eq!(usage.disk_used, Some(3_221_225_472));
        // No interface: no traffic figure, not a made-up zero.
        assert_eq!((usage.rx_bytes, usage.tx_bytes), (None, None));

        let older = parse_domstats(
            "Domain: 'old'\n  state.state=1\n  balloon.available=1000\n  balloon.unused=400\n",
        );
        let stats = Stats::new(&older[0].1);
        assert_eq!(
            stats.memory_used(),
            (Some(600 * 1024), MemorySource::GuestFree)
        );
        let none = parse_domstats("Domain: 'bare'\n  state.state=1\n");
        let stats = Stats::new(&none[0].1);
        assert_eq!(stats.memory_used(), (None, MemorySource::Unknown));
        assert_eq!(stats.usage().memory_total, None);
        assert_eq!(stats.usage().disk_total, None);
    }

    #[test]
    fn a_shut_off_domain_uses_nothing_and_keeps_its_totals() {
        let (usage, _) = reading("off");
        assert!(!usage.running);
        assert_eq!(usage.cpu_time_ns, Some(0));
        assert_eq!(usage.memory_used, Some(0));
        assert_eq!(usage.memory_total, Some(786_432 * 1024));
        assert_eq!((usage.rx_bytes, usage.tx_bytes), (Some(0), Some(0)));
        assert_eq!(usage.disk_used, Some(8_650_752));
        assert_eq!(usage.disk_total, Some(2_147_483_648));
        assert_eq!(usage.cores, Some(2));
    }
}
