//! Raising the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit.
//!
//! Every connection is a file descriptor, and distributions default the soft limit to 1024,
//! far below what a server (or `herald bench`) needs. Raising the soft limit up to the hard one
//! needs no privileges; `nix` gives a safe binding to `setrlimit(2)`. It is best effort: on
//! failure the limit stays as it was, and callers report it.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The open-file limits of this process, `(soft, hard)`; `None` for "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoFile {
    /// Current soft limit.
    pub(crate) soft: Option<u64>,
    /// Hard limit (the ceiling for the soft one).
    pub(crate) hard: Option<u64>,
}

/// A limit as text: the number, or `unlimited`.
pub(crate) fn show(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

/// Reads the limits from `/proc/self/limits` (Linux); `None` elsewhere or when unreadable.
pub(crate) fn nofile() -> Option<NoFile> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_limits(&text)
}

fn parse_limits(text: &str) -> Option<NoFile> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| -> Option<Option<u64>> {
        match s? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some(NoFile {
        soft: parse(fields.next())?,
        hard: parse(fields.next())?,
    })
}

/// Raises the soft open-file limit to the hard limit if it is lower, and returns the limits
/// in force afterwards (`None` when they cannot be read).
pub(crate) fn raise_nofile() -> Option<NoFile> {
    let before = nofile()?;
    let (Some(soft), Some(hard)) = (before.soft, before.hard) else {
        // "unlimited" soft is already enough; an "unlimited" hard cannot be a soft value for
        // RLIMIT_NOFILE (the kernel caps it at fs.nr_open), so leave it alone.
        return Some(before);
    };
    if soft >= hard {
        return Some(before);
    }
    match getrlimit(Resource::RLIMIT_NOFILE)
        .and_then(|(_, hard)| setrlimit(Resource::RLIMIT_NOFILE, hard, hard))
    {
        Ok(()) => {}
        Err(e) => tracing::debug!(error = %e, soft, hard, "could not raise the open-file limit"),
    }
    nofile()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(
            parse_limits(text),
            Some(NoFile {
                soft: Some(1024),
                hard: Some(524_288)
            })
        );
        let text = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(
            parse_limits(text),
            Some(NoFile {
                soft: None,
                hard: None
            })
        );
        assert_eq!(parse_limits("nothing here"), None);
    }

    #[test]
    fn raising_never_lowers() {
        let before = nofile();
        let after = raise_nofile();
        if let (Some(b), Some(a)) = (before, after) {
            assert!(a.soft.unwrap_or(u64::MAX) >= b.soft.unwrap_or(u64::MAX));
        }
    }
}
