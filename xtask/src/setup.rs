//! `cargo xtask setup`: make libtorch 2.11 available to plain `cargo build/test/run`.
//!
//! Picks a libtorch (an explicit directory, else an importable Python torch 2.11.x, else a
//! pip install of torch==2.11.0 into the user cache) and writes `.cargo/libtorch.toml`,
//! which `.cargo/config.toml` includes: `LIBTORCH` for torch-sys' build script and an
//! rpath so binaries, tests and doctests load libtorch without `LD_LIBRARY_PATH`.
//! Every write is atomic: an interrupted or failed setup leaves nothing half-done behind.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The libtorch release tch 0.24 is built for.
const TORCH_VERSION: &str = "2.11.0";
/// Any patch release of this minor version works with tch 0.24.
const TORCH_MINOR: &str = "2.11.";
/// CUDA runtime wheels that `libtorch_cpu.so` of the PyPI torch 2.11.0 wheel links against
/// (CUPTI for the profiler, cudart); pinned as in the wheel's `cuda-toolkit==13.0.2`.
const CPU_RUNTIME_WHEELS: [&str; 2] = [
    "nvidia-cuda-runtime==13.0.96.*",
    "nvidia-cuda-cupti==13.0.85.*",
];
/// Written beside the workspace's `.cargo/config.toml`, which includes it when present.
const CONFIG_FILE: &str = ".cargo/libtorch.toml";

/// What `setup` was asked for.
#[derive(Debug, Default)]
pub struct Options {
    /// An existing libtorch directory (`--libtorch DIR` or `$SLIMSEG_LIBTORCH`).
    libtorch: Option<PathBuf>,
    /// Install torch with its CUDA libraries (`--cuda`).
    cuda: bool,
}

impl Options {
    /// Parses `setup`'s command-line arguments; `$SLIMSEG_LIBTORCH` stands for `--libtorch`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            libtorch: std::env::var_os("SLIMSEG_LIBTORCH").map(PathBuf::from),
            cuda: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--cuda" => options.cuda = true,
                "--libtorch" => {
                    let dir = args.next().context("--libtorch needs a directory")?;
                    options.libtorch = Some(PathBuf::from(dir));
                }
                other => match other.strip_prefix("--libtorch=") {
                    Some(dir) => options.libtorch = Some(PathBuf::from(dir)),
                    None => bail!("unknown option `{other}` for `cargo xtask setup`"),
                },
            }
        }
        Ok(options)
    }
}

/// A usable libtorch: `root` holds `include/` and `lib/libtorch_cpu.so`.
#[derive(Debug)]
pub struct Libtorch {
    root: PathBuf,
    version: String,
    source: &'static str,
}

/// Finds or installs libtorch and points cargo at it. Idempotent: a second run reuses what
/// the first found and rewrites nothing, so cargo rebuilds nothing.
pub fn run(options: &Options) -> Result<Libtorch> {
    let libtorch = match &options.libtorch {
        Some(dir) => inspect(dir, "the given directory").with_context(|| {
            format!(
                "--libtorch / SLIMSEG_LIBTORCH points at {}, which is not a usable libtorch",
                dir.display()
            )
        })?,
        None => match python_torch() {
            Some(found) => found,
            None => cached_or_installed(options.cuda)?,
        },
    };
    let changed = write_cargo_config(&libtorch)?;
    eprintln!(
        "libtorch {} at {} ({}){}",
        libtorch.version,
        libtorch.root.display(),
        libtorch.source,
        if changed {
            "; wrote .cargo/libtorch.toml"
        } else {
            ""
        }
    );
    Ok(libtorch)
}

/// Checks that `root` is a libtorch of the right version and returns it.
fn inspect(root: &Path, source: &'static str) -> Result<Libtorch> {
    let root = root
        .canonicalize()
        .with_context(|| format!("{} does not exist", root.display()))?;
    let lib = root.join("lib");
    if !lib.join("libtorch_cpu.so").is_file() {
        bail!("{} has no lib/libtorch_cpu.so", root.display());
    }
    if !root.join("include").join("torch").is_dir() {
        bail!("{} has no include/torch headers", root.display());
    }
    let version = read_version(&root).with_context(|| {
        format!(
            "{} has neither version.py nor build-version",
            root.display()
        )
    })?;
    if !version.starts_with(TORCH_MINOR) {
        bail!(
            "{} is libtorch {version}, but tch 0.24 needs {TORCH_VERSION} (2.11.x)",
            root.display()
        );
    }
    Ok(Libtorch {
        root,
        version,
        source,
    })
}

/// The version of a Python wheel's torch package (`version.py`) or of a C++ libtorch
/// distribution (`build-version`).
fn read_version(root: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        return text.lines().find_map(|line| {
            let value = line
                .strip_prefix("__version__")?
                .trim_start()
                .strip_prefix('=')?;
            Some(value.trim().trim_matches(['\'', '"']).to_owned())
        });
    }
    let text = std::fs::read_to_string(root.join("build-version")).ok()?;
    Some(text.trim().to_owned())
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// An importable Python torch 2.11.x (as on the GPU machines), if there is one.
fn python_torch() -> Option<Libtorch> {
    let output = Command::new(python())
        .args([
            "-c",
            "import os, torch; print(os.path.dirname(os.path.abspath(torch.__file__)))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    match inspect(Path::new(dir.trim()), "Python torch") {
        Ok(found) => Some(found),
        Err(why) => {
            eprintln!("note: not using the Python torch install: {why:#}");
            None
        }
    }
}

/// The per-user cache directory for libtorch installs.
fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLIMSEG_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("slimseg"));
    }
    let home = std::env::var_os("HOME").context("neither SLIMSEG_CACHE_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("slimseg"))
}

/// The cached pip install of torch, installing it first if it is not there yet.
fn cached_or_installed(cuda: bool) -> Result<Libtorch> {
    let cache = cache_dir()?;
    let name = if cuda {
        format!("torch-{TORCH_VERSION}-cuda")
    } else {
        format!("torch-{TORCH_VERSION}")
    };
    let install = cache.join(&name);
    let source = if cuda {
        "pip cache, with CUDA"
    } else {
        "pip cache"
    };
    if install.exists() {
        return inspect(&install.join("torch"), source).with_context(|| {
            format!(
                "the cached install {} is damaged; delete it and run setup again",
                install.display()
            )
        });
    }
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create the cache directory {}", cache.display()))?;
    remove_stale_partials(&cache, &name);
    // Install beside the final place, then rename: the final directory exists only whole.
    let partial = cache.join(format!("{name}.partial-{}", std::process::id()));
    let result = pip_install(&partial, cuda).and_then(|()| {
        std::fs::rename(&partial, &install)
            .with_context(|| format!("cannot move {} into place", partial.display()))
    });
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(err);
    }
    inspect(&install.join("torch"), source)
}

/// Removes what an interrupted earlier install left (`NAME.partial-PID`).
fn remove_stale_partials(cache: &Path, name: &str) {
    let prefix = format!("{name}.partial-");
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            eprintln!(
                "removing an interrupted install: {}",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn pip_install(target: &Path, cuda: bool) -> Result<()> {
    let python = python();
    let hint = format!(
        "To use an existing libtorch {TORCH_VERSION} instead (the C++ zip from pytorch.org, or \
         the torch/ folder of a Python torch {TORCH_VERSION} install), run\n    \
         cargo xtask setup --libtorch /path/to/libtorch\n\
         (or set SLIMSEG_LIBTORCH=/path/to/libtorch); or install torch=={TORCH_VERSION} for \
         {python} and run `cargo xtask setup` again."
    );
    match Command::new(&python)
        .args(["-m", "pip", "--version"])
        .output()
    {
        Err(err) => bail!(
            "cannot install libtorch: `{python}` was not found ({err}); setup needs python3 \
             with pip to download torch=={TORCH_VERSION}.\n{hint}"
        ),
        Ok(out) if !out.status.success() => bail!(
            "cannot install libtorch: pip is not available for `{python}` ({}).\n{hint}",
            last_lines(&out.stderr, 1)
        ),
        Ok(_) => {}
    }
    let torch = format!("torch=={TORCH_VERSION}");
    let mut args = vec![
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-compile",
        "--no-warn-script-location",
        "--retries",
        "2",
        "--timeout",
        "30",
        "--target",
    ];
    let target_arg = target.to_string_lossy().into_owned();
    args.push(&target_arg);
    if cuda {
        eprintln!(
            "installing {torch} with its CUDA libraries (about 3 GB to download, 7 GB on disk)"
        );
        args.push(&torch);
    } else {
        eprintln!(
            "installing {torch} without the CUDA libraries (about 580 MB to download, 1.2 GB \
             on disk) into {}",
            target.display()
        );
        args.push("--no-deps");
        args.push(&torch);
        args.extend(CPU_RUNTIME_WHEELS);
    }
    let output = Command::new(&python)
        .args(&args)
        .output()
        .with_context(|| format!("cannot run `{python} -m pip`"))?;
    if !output.status.success() {
        bail!(
            "cannot install libtorch: pip could not install {torch} (offline, or PyPI \
             unreachable?). pip said:\n{}\n{hint}",
            last_lines(&output.stderr, 4)
        );
    }
    Ok(())
}

/// The tool's `ERROR:` lines if it printed any, else its last `n` non-empty lines.
fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<&str> = text.lines().filter(|l| l.starts_with("ERROR:")).collect();
    if lines.is_empty() {
        lines = text.lines().filter(|l| !l.trim().is_empty()).collect();
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|line| format!("    {}", line.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `.cargo/libtorch.toml` atomically if its content changes; returns whether it did.
fn write_cargo_config(libtorch: &Libtorch) -> Result<bool> {
    let path = crate::workspace_root().join(CONFIG_FILE);
    let content = cargo_config(libtorch);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let tmp = path.with_extension(format!("toml.tmp-{}", std::process::id()));
    std::fs::write(&tmp, &content).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

fn cargo_config(libtorch: &Libtorch) -> String {
    let root = toml_string(&libtorch.root.to_string_lossy());
    let rpath = toml_string(&format!(
        "link-arg=-Wl,-rpath,{}",
        libtorch.root.join("lib").display()
    ));
    format!(
        "# Written by `cargo xtask setup`: libtorch {version} ({source}).\n\
         # Run the setup again to change it; delete this file to unconfigure.\n\
         [env]\n\
         LIBTORCH = {root}\n\
         \n\
         [build]\n\
         rustflags = [\"-C\", {rpath}]\n\
         rustdocflags = [\"-C\", {rpath}]\n",
        version = libtorch.version,
        source = libtorch.source,
    )
}

/// A TOML basic string holding `value`.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fake_libtorch(root: &Path, version_py: Option<&str>) {
        std::fs::create_dir_all(root.join("lib")).unwrap();
        std::fs::create_dir_all(root.join("include/torch")).unwrap();
        std::fs::write(root.join("lib/libtorch_cpu.so"), b"").unwrap();
        if let Some(version) = version_py {
            std::fs::write(
                root.join("version.py"),
                format!("__version__ = '{version}'\n"),
            )
            .unwrap();
        }
    }

    #[test]
    fn inspect_accepts_2_11_and_rejects_other_versions_and_layouts() {
        let dir = scratch("inspect");
        let good = dir.join("good");
        fake_libtorch(&good, Some("2.11.0+cu130"));
        assert_eq!(inspect(&good, "test").unwrap().version, "2.11.0+cu130");

        let old = dir.join("old");
        fake_libtorch(&old, Some("2.10.1+cpu"));
        let err = format!("{:#}", inspect(&old, "test").unwrap_err());
        assert!(err.contains("2.10.1+cpu") && err.contains("2.11"), "{err}");

        let cpp = dir.join("cpp");
        fake_libtorch(&cpp, None);
        std::fs::write(cpp.join("build-version"), "2.11.0+cpu\n").unwrap();
        assert_eq!(inspect(&cpp, "test").unwrap().version, "2.11.0+cpu");

        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = format!("{:#}", inspect(&empty, "test").unwrap_err());
        assert!(err.contains("libtorch_cpu.so"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn options_parse_flags_and_reject_typos() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let opts = Options::parse(&args(&["--cuda", "--libtorch=/x"])).unwrap();
        assert!(opts.cuda);
        assert_eq!(opts.libtorch.as_deref(), Some(Path::new("/x")));
        let opts = Options::parse(&args(&["--libtorch", "/y"])).unwrap();
        assert_eq!(opts.libtorch.as_deref(), Some(Path::new("/y")));
        assert!(Options::parse(&args(&["--cdua"])).is_err());
        assert!(Options::parse(&args(&["--libtorch"])).is_err());
    }

    #[test]
    fn cargo_config_is_valid_toml_with_escaped_paths() {
        let libtorch = Libtorch {
            root: PathBuf::from("/opt/we\"ird\\path/torch"),
            version: "2.11.0".into(),
            source: "test",
        };
        let text = cargo_config(&libtorch);
        assert!(
            text.contains(r#"LIBTORCH = "/opt/we\"ird\\path/torch""#),
            "{text}"
        );
        assert!(
            text.contains(r#""link-arg=-Wl,-rpath,/opt/we\"ird\\path/torch/lib""#),
            "{text}"
        );
    }

    #[test]
    fn stale_partial_installs_are_removed_and_others_kept() {
        let dir = scratch("partials");
        std::fs::create_dir_all(dir.join("torch-2.11.0.partial-123/torch")).unwrap();
        std::fs::create_dir_all(dir.join("torch-2.11.0")).unwrap();
        std::fs::create_dir_all(dir.join("torch-2.11.0-cuda.partial-9")).unwrap();
        remove_stale_partials(&dir, "torch-2.11.0");
        assert!(!dir.join("torch-2.11.0.partial-123").exists());
        assert!(dir.join("torch-2.11.0").exists());
        assert!(dir.join("torch-2.11.0-cuda.partial-9").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
