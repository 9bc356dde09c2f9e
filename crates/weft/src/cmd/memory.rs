//! Gives back the pages of the `weft` executable that only start-up read.
//!
//! Start-up reads parts of the executable that a running flow never reads again: the loader's
//! pass over the relocation table (`.rela.dyn`, 2.25 MiB of the release binary), config parsing,
//! VRL's compiler and the clients' set-up. The kernel keeps those pages mapped, so they count in
//! the process's RSS, and in a container's memory limit, for as long as it runs. Once every flow
//! runs, [`release_startup_pages`] drops the executable's read-only mappings from the process
//! (`MADV_DONTNEED`); the pages a running flow needs come back from the page cache the first time
//! it touches them (a minor fault each, at most once per page).
//!
//! Only a mapping that is not writable and holds no page of the process's own (`Anonymous: 0 kB`
//! in `/proc/self/smaps`) is dropped: all of its content is the file's, so nothing is lost. The
//! relocated tables (`.data.rel.ro`) are such own pages, and so is code a debugger put a
//! breakpoint in: those mappings are left alone.

use std::io;

/// The executable's read-only mappings, resident KiB before and after the release.
#[derive(Debug, Clone, Copy)]
pub struct Released {
    pub before_kib: u64,
    pub after_kib: u64,
}

/// One mapping of `/proc/self/smaps`.
#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    path: String,
    rss_kib: u64,
    anonymous_kib: u64,
}

/// Drops the executable's clean, read-only pages from the process (see the module's docs).
pub fn release_startup_pages() -> io::Result<Released> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy();
    let mut before_kib = 0;
    for mapping in mappings(&std::fs::read_to_string("/proc/self/smaps")?) {
        if mapping.path != exe || mapping.writable {
            continue;
        }
        before_kib += mapping.rss_kib;
        if mapping.anonymous_kib != 0 || mapping.rss_kib == 0 {
            continue;
        }
        // SAFETY: the range is a whole mapping of the executable file that cannot be written and
        // holds no anonymous page, so every page of it reads the same from the page cache after
        // being dropped. MADV_DONTNEED changes no mapping, only which pages are resident.
        let status = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let after_kib = mappings(&std::fs::read_to_string("/proc/self/smaps")?)
        .filter(|m| m.path == exe && !m.writable)
        .map(|m| m.rss_kib)
        .sum();
    Ok(Released {
        before_kib,
        after_kib,
    })
}

/// The mappings of an smaps text: a header line (`start-end perms offset dev inode path`), then
/// `Key: value kB` lines.
fn mappings(smaps: &str) -> impl Iterator<Item = Mapping> + '_ {
    let mut lines = smaps.lines().peekable();
    std::iter::from_fn(move || {
        loop {
            let header = lines.next()?;
            let mut fields = header.split_whitespace();
            let Some((start, end)) = fields.next().and_then(|range| range.split_once('-')) else {
                continue;
            };
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            let writable = fields.next().is_some_and(|perms| perms.contains('w'));
            // offset, device, inode; the path is the rest (it may hold spaces).
            let path = header
                .splitn(6, char::is_whitespace)
                .nth(5)
                .unwrap_or("")
                .trim_start()
                .to_owned();
            let mut mapping = Mapping {
                start,
                end,
                writable,
                path,
                rss_kib: 0,
                anonymous_kib: 0,
            };
            while let Some(line) = lines.peek() {
                let Some((key, value)) = line.split_once(':') else {
                    break;
                };
                // A header's first field holds a '-', never a ':' before its space.
                if key.contains(char::is_whitespace) || key.contains('-') {
                    break;
                }
                let kib = || value.split_whitespace().next()?.parse::<u64>().ok();
                match key {
                    "Rss" => mapping.rss_kib = kib().unwrap_or(0),
                    "Anonymous" => mapping.anonymous_kib = kib().unwrap_or(0),
                    _ => {}
                }
                lines.next();
            }
            return Some(mapping);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5581a0000000-5581a0400000 r--p 00000000 fd:01 1234 /opt/weft/bin/weft
Size:               4096 kB
Rss:                2304 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw
5581a0400000-5581a2400000 r-xp 00400000 fd:01 1234 /opt/weft/bin/weft
Rss:                3200 kB
Anonymous:             0 kB
5581a2400000-5581a2600000 r--p 02400000 fd:01 1234 /opt/weft/bin/weft
Rss:                2048 kB
Anonymous:          2040 kB
5581a2600000-5581a2610000 rw-p 02600000 fd:01 1234 /opt/weft/bin/weft
Rss:                  64 kB
Anonymous:            64 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
Rss:                 132 kB
Anonymous:           132 kB
7f0000100000-7f0000200000 r-xp 00000000 fd:01 99 /tmp/my dir/lib.so (deleted)
Rss:                  12 kB
Anonymous:             0 kB
";

    #[test]
    fn smaps_mappings_are_read_with_their_sizes_and_paths() {
        let all: Vec<Mapping> = mappings(SMAPS).collect();
        assert_eq!(all.len(), 6);
        assert_eq!(
            all[0],
            Mapping {
                start: 0x5581a0000000,
                end: 0x5581a0400000,
                writable: false,
                path: "/opt/weft/bin/weft".into(),
                rss_kib: 2304,
                anonymous_kib: 0,
            }
        );
        assert_eq!((all[1].rss_kib, all[1].anonymous_kib), (3200, 0));
        // The relocated read-only tables: own pages, never dropped.
        assert_eq!((all[2].writable, all[2].anonymous_kib), (false, 2040));
        assert!(all[3].writable);
        assert_eq!(all[4].path, "");
        assert_eq!(all[5].path, "/tmp/my dir/lib.so (deleted)");
    }

    #[test]
    fn the_running_executable_gives_back_its_read_only_pages_and_keeps_working() {
        let released = release_startup_pages().expect("smaps and madvise work on Linux");
        assert!(released.before_kib > 0, "{released:?}");
        assert!(released.after_kib < released.before_kib, "{released:?}");
        // The code just given back runs again, read back from the page cache.
        assert_eq!(
            release_startup_pages().map(|r| r.before_kib > 0).ok(),
            Some(true)
        );
    }
}
