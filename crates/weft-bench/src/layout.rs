//! `weft-bench layout`: writes the list of functions the release binary is laid out by.
//!
//! It runs the release `weft` under valgrind's callgrind, once with a direct and once with a
//! durable `http_server` → `map` → `http_client` flow: start-up, a little load, the admin
//! endpoint's pages, a draining stop. Every function of the binary that ran is written to
//! `crates/weft/link/hot-functions.txt`, by when it ran: first those of a running flow (the
//! load and the admin pages; the direct run's, the most instructions first, then those the
//! durable run adds), then those only start-up and the stop ran. lld puts them side by side at
//! the front of the machine code (`crates/weft/build.rs`) in that order. A running weft gives
//! back the start-up pages of its binary (`weft run`'s `cmd/memory.rs`), so what stays resident
//! is the front of that list: a few pages instead of pages spread over all of the binary.
//!
//! The release binary has no symbol table, so callgrind knows its functions by address; the
//! linker's map of the same build names them:
//!
//! ```sh
//! WEFT_LINK_MAP=/tmp/weft.map cargo build --release -p weft -p weft-bench
//! target/release/weft-bench layout --map /tmp/weft.map
//! cargo build --release -p weft    # links by the new list
//! ```
//!
//! Run it again as the last step of a change to weft's code, and when the dependencies or the
//! toolchain change: symbol names change with them (ThinLTO's `.llvm.N` names with any edit of
//! the module they come from), and a name the build no longer has is only skipped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Killed, free_port, get_text, mapping_flow, run_load, start_receiver, wait_ready};

const HEADER: &str =
    "# The functions a running weft uses: first those of a running flow (a direct flow's, the most
# instructions first, then those a durable flow adds), then those only start-up and the stop
# run. The release binary lays them out side by side, in this order (crates/weft/build.rs).
# Written by `weft-bench layout`; do not edit.
";

/// The runs profiled, in the order their functions are laid out: a flow's settings each.
const SCENARIOS: [(&str, &str); 2] = [
    ("direct", "    concurrency: 4096\n"),
    ("durable", "    delivery: durable\n"),
];

pub fn write(weft: PathBuf, map: PathBuf, out: PathBuf, seconds: f64) -> anyhow::Result<()> {
    let symbols = Symbols::read(&map)?;
    let me = std::env::current_exe()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("weft-layout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (_receiver, receiver_addr) = start_receiver(&me, &rt)?;
    let upstream = format!("http://{receiver_addr}/sink");
    let mut running = Vec::new();
    let mut starting = Vec::new();
    for (tag, settings) in SCENARIOS {
        let ran = profiled(
            &weft,
            &me,
            &rt,
            &dir.join(tag),
            settings,
            &upstream,
            seconds,
        )?;
        let steady = symbols.name(&ran.running);
        if steady.len() < 100 {
            bail!(
                "only {} functions of {} ran that {} names: give the map of the same build",
                steady.len(),
                weft.display(),
                map.display()
            );
        }
        let once = symbols.name(&ran.once);
        println!(
            "{tag}: {} functions ran while the flow ran, {} at start-up and stop",
            steady.len(),
            once.len()
        );
        running.push(steady);
        starting.push(once);
    }
    let mut known = HashSet::new();
    let functions: Vec<String> = running
        .into_iter()
        .chain(starting)
        .flatten()
        .filter(|f| known.insert(f.clone()))
        .collect();
    let mut file = String::from(HEADER);
    for name in &functions {
        file.push_str(name);
        file.push('\n');
    }
    std::fs::write(&out, file)?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} functions written to {}; `cargo build --release -p weft` links by them",
        functions.len(),
        out.display()
    );
    Ok(())
}

/// The instructions of `weft` that ran in one process, by address and with the times each ran.
struct Ran {
    /// While the flow ran: the load and the admin endpoint's pages.
    running: Vec<(u64, u64)>,
    /// Start-up and the draining stop.
    once: Vec<(u64, u64)>,
}

/// Runs one flow (`http_server` → `map` → `http_client`, with `settings`) under callgrind:
/// start-up, `seconds` of load, the admin endpoint's pages, a draining stop. Callgrind dumps
/// what ran so far when told to (`callgrind_control --dump`): `.1` is start-up, `.2` the
/// running flow, and the profile written at exit the stop.
fn profiled(
    weft: &Path,
    me: &Path,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    settings: &str,
    upstream: &str,
    seconds: f64,
) -> anyhow::Result<Ran> {
    std::fs::create_dir_all(dir)?;
    let address = format!("127.0.0.1:{}", free_port()?);
    let admin = format!("127.0.0.1:{}", free_port()?);
    let config = dir.join("flow.yaml");
    std::fs::write(
        &config,
        mapping_flow(
            settings,
            &format!(r#"http_server: {{ address: "{address}", path: /orders }}"#),
            &format!(r#"http_client: {{ url: "{upstream}" }}"#),
        ),
    )?;
    let profile = dir.join("callgrind.out");
    let log = dir.join("stderr.log");
    let mut weft_run = Killed(
        Command::new("valgrind")
            .args([
                "--tool=callgrind",
                "--demangle=no",
                "--dump-instr=yes",
                "--dump-line=no",
                "--quiet",
            ])
            .arg(format!("--callgrind-out-file={}", profile.display()))
            .arg(weft)
            .arg("run")
            .arg(&config)
            .args(["--admin-address", &admin])
            .arg("--data-dir")
            .arg(dir.join("data"))
            // The line that says start-up is over (`cmd/run.rs`).
            .env("WEFT_LOG", "warn,weft::cmd::run=debug")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("valgrind (Debian's valgrind package) runs weft")?,
    );
    for address in [&address, &admin] {
        rt.block_on(wait_ready(address))?;
    }
    let pid = weft_run.0.id().to_string();
    // Start-up is over once weft gives back its start-up pages.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)?.contains("start-up pages") {
        if Instant::now() > deadline {
            bail!("weft did not say within 60 s that start-up is over");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = dump(&pid, &profile, 1)?;
    run_load(me, &format!("http://{address}/orders"), 4, seconds)?;
    for path in ["/metrics", "/api/v1/flows", "/health"] {
        get_text(rt, &admin, path);
    }
    let running = dump(&pid, &profile, 2)?;
    // A draining stop, the way a deployment stops it; callgrind writes the rest at exit.
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while weft_run.0.try_wait()?.is_none() {
        if Instant::now() > deadline {
            bail!("weft did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped = std::fs::read_to_string(&profile)
        .with_context(|| format!("reading {}", profile.display()))?;
    let binary = std::fs::canonicalize(weft)?;
    let mut once = ran(&started, &binary);
    once.extend(ran(&stopped, &binary));
    Ok(Ran {
        running: ran(&running, &binary),
        once,
    })
}

/// Has callgrind in process `pid` write what ran since its last dump, as part `part` of
/// `profile`, and reads it.
fn dump(pid: &str, profile: &Path, part: u32) -> anyhow::Result<String> {
    let status = Command::new("callgrind_control")
        .args(["--dump", pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("callgrind_control (valgrind's) runs")?;
    if !status.success() {
        bail!("callgrind_control --dump {pid}: {status}");
    }
    let path = PathBuf::from(format!("{}.{part}", profile.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Callgrind writes the whole part, then names it in its last line (`totals:`).
        if let Ok(text) = std::fs::read_to_string(&path)
            && text.lines().any(|l| l.starts_with("totals:"))
        {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("callgrind did not write {} within 30 s", path.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every instruction of `binary` that ran, by address, with the times it ran (a profile taken
/// with `--dump-instr=yes`).
///
/// Callgrind's format names each object once as `ob=(N) name` (or first where it is called,
/// `cob=`) and then by `(N)` alone; after a `fn=` line come its cost lines, `address count`,
/// the address absolute (`0x…`), relative to the line before (`+N`, `-N`) or the same (`*`).
/// A `calls=` line says the cost line after it is a call's, which the callee counts itself.
fn ran(profile: &str, binary: &Path) -> Vec<(u64, u64)> {
    let binary = binary.to_string_lossy();
    let mut objects: HashMap<&str, &str> = HashMap::new();
    let mut object = "";
    let mut in_binary = false;
    let mut address = 0u64;
    let mut call_cost_next = false;
    let mut ran = Vec::new();
    for line in profile.lines() {
        if let Some(rest) = line.strip_prefix("ob=") {
            let (id, name) = split_id(rest);
            if let Some(name) = name {
                objects.insert(id, name);
            }
            object = id;
        } else if let Some(rest) = line.strip_prefix("cob=") {
            if let (id, Some(name)) = split_id(rest) {
                objects.insert(id, name);
            }
        } else if line.starts_with("fn=") {
            in_binary = objects.get(object).is_some_and(|o| *o == binary);
        } else if line.starts_with("calls=") {
            call_cost_next = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            let mut fields = line.split_whitespace();
            let position = fields.next().unwrap_or("*");
            address = if let Some(hex) = position.strip_prefix("0x") {
                u64::from_str_radix(hex, 16).unwrap_or(address)
            } else if let Some(n) = position.strip_prefix('+') {
                address + n.parse::<u64>().unwrap_or(0)
            } else if let Some(n) = position.strip_prefix('-') {
                address - n.parse::<u64>().unwrap_or(0)
            } else if position == "*" {
                address
            } else {
                position.parse().unwrap_or(address)
            };
            let count = fields.next().and_then(|c| c.parse::<u64>().ok());
            if std::mem::take(&mut call_cost_next) {
                continue;
            }
            if let (true, Some(count)) = (in_binary, count) {
                ran.push((address, count));
            }
        }
    }
    ran
}

/// `(N) name` or `(N)`: the id, and the name when this is where it is defined.
fn split_id(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once(' ') {
        Some((id, name)) => (id, Some(name)),
        None => (rest, None),
    }
}

/// The functions of the binary's machine code by address, from lld's map of its link (`-Map`).
struct Symbols(Vec<(u64, String)>);

impl Symbols {
    fn read(map: &Path) -> anyhow::Result<Symbols> {
        let text = std::fs::read_to_string(map)
            .with_context(|| format!("reading the linker map {}", map.display()))?;
        let symbols = Symbols::parse(&text);
        if symbols.0.is_empty() {
            bail!("{} names no function in .text", map.display());
        }
        Ok(symbols)
    }

    /// A map line is `VMA LMA SIZE ALIGN` and then an output section at no indent, an input
    /// section at 8 spaces (`file:(.text.NAME)`: one function, compiled into a section of its
    /// own, named as the ordering file wants it) or a symbol at 16 (used for sections of several
    /// functions, `(.text)`, where they are C names).
    fn parse(text: &str) -> Symbols {
        let mut symbols = Vec::new();
        let mut in_text = false;
        let mut one_function = false;
        for line in text.lines() {
            let mut rest = line;
            let mut fields = [""; 4];
            for field in &mut fields {
                rest = rest.trim_start();
                let end = rest.find(' ').unwrap_or(rest.len());
                *field = &rest[..end];
                rest = &rest[end..];
            }
            let Ok(vma) = u64::from_str_radix(fields[0], 16) else {
                continue;
            };
            let name = rest.trim_start();
            // One space after the alignment, then the indent.
            match (rest.len() - name.len()).saturating_sub(1) {
                0 => in_text = name == ".text",
                8 if in_text => {
                    let function = name
                        .rsplit_once(":(.text.")
                        .and_then(|(_, section)| section.strip_suffix(')'))
                        .map(|section| {
                            ["unlikely.", "hot.", "startup.", "exit."]
                                .iter()
                                .find_map(|prefix| section.strip_prefix(prefix))
                                .unwrap_or(section)
                        });
                    one_function = function.is_some();
                    if let Some(function) = function {
                        symbols.push((vma, function.to_string()));
                    }
                }
                16 if in_text && !one_function && !name.is_empty() => {
                    symbols.push((vma, name.to_string()))
                }
                _ => {}
            }
        }
        symbols.sort();
        symbols.dedup();
        Symbols(symbols)
    }

    /// The functions that ran, most instructions first: each instruction counts for the
    /// function that holds it.
    fn name(&self, ran: &[(u64, u64)]) -> Vec<String> {
        let mut costs: HashMap<&str, u64> = HashMap::new();
        for &(address, count) in ran {
            let i = self.0.partition_point(|(start, _)| *start <= address);
            if let Some(i) = i.checked_sub(1) {
                *costs.entry(self.0[i].1.as_str()).or_default() += count;
            }
        }
        let mut named: Vec<(u64, &str)> = costs.into_iter().map(|(n, c)| (c, n)).collect();
        named.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        named
            .into_iter()
            .map(|(_, name)| name.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_binary_s_instructions_and_skips_call_costs() {
        let profile = "\
positions: instr
ob=(3) /lib/ld.so
fn=(4) 0x0000000000001000
0x1000 1
cob=(1) /bin/weft
cfn=(1) 0x0000000000b25840
calls=1 0xb25840
* 2000
ob=(1)
fn=(1) 0x0000000000b25840
0xb25840 10
+4 3
cob=(2) /lib/libc.so.6
cfn=(2) memcpy
calls=3 0x2000
* 500
+5 2
-2 7
ob=(2)
fn=(2)
0x2000 500
";
        let took = ran(profile, Path::new("/bin/weft"));
        assert_eq!(
            took,
            [(0xb25840, 10), (0xb25844, 3), (0xb25849, 2), (0xb25847, 7)]
        );
    }

    #[test]
    fn names_addresses_by_the_function_that_holds_them() {
        let map = "\
             VMA              LMA     Size Align Out     In      Symbol
          2e0              2e0       1c     1 .interp
          b25840           b25840  205e3fc    64 .text
          b25840           b25840      2c6    16         a.o:(.text._ZN1a17h0E)
          b25840           b25840        0     1                 a::h0
          b25a00           b25a00       10    16         c.o:(.text.unlikely._ZN1c17h2E)
          b25a00           b25a00        0     1                 c::h2
          b25b10           b25b10      3ad    16         b.o:(.text)
          b25b10           b25b10        0     1                 mi_free
          b25c00           b25c00        0     1                 mi_malloc
         2b85300          2b85300    20ad8    64 .data.rel.ro
         2b85300          2b85300        8     1                 some_table
";
        let symbols = Symbols::parse(map);
        assert_eq!(symbols.0.len(), 4, "{:?}", symbols.0);
        let named = symbols.name(&[
            (0xb25850, 5),
            (0xb25b10, 7),
            (0xb25c08, 9),
            (0xb25841, 4),
            (0xb25a04, 3),
            (0x100, 1),
        ]);
        assert_eq!(named, ["_ZN1a17h0E", "mi_malloc", "mi_free", "_ZN1c17h2E"]);
    }
}
