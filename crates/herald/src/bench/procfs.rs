//! What `/proc` tells about the server under test and about the bench itself (Linux): resident
//! memory and CPU time. Every reader returns `None` where `/proc` is missing or unreadable.

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub(super) fn rss_bytes(pid: u32) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU time of a process (`"self"` or a PID), in clock ticks.
pub(super) fn cpu_ticks(who: &str) -> Option<u64> {
    parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/{who}/stat")).ok()?)
}

/// `utime` + `stime`: fields 14 and 15 of `/proc/<pid>/stat`, counted after the command name,
/// which is in parentheses and may itself hold spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if the system does not say).
pub(super) fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\therald\nVmPeak:\t  20000 kB\nVmRSS:\t   10108 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(10108 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
            250 31 0 0 20 0 3 0 12345 1000000 2500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(cpu_ticks("self").is_some());
            assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        }
        assert!(ticks_per_second() > 0);
    }
}
