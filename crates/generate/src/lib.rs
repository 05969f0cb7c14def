//! The binaries' hidden `--generate KIND DIR`: man pages (clap_mangen) and
//! shell completions (clap_complete) rendered from each binary's own clap
//! definition, so what `man guestcomm-exec` says is what `--help` says.
//! scripts/package runs the built binaries with it (as ripgrep's
//! `rg --generate`); nothing else calls it.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::TypedValueParser;

/// The option, always first on the command line: `BIN --generate KIND DIR`.
pub const OPTION: &str = "--generate";

/// Whether this command line asks for `--generate` (checked before the
/// binary's own parser, whose required arguments it has none of).
pub fn requested() -> bool {
    std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == OPTION)
}

/// What `--generate` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `NAME.SECTION`, and `NAME-SUB.SECTION` for every subcommand, nested
    /// ones too (`guestcomm-vm-add.1`).
    Man,
    /// `NAME.bash` (for /usr/share/bash-completion/completions/NAME).
    #[cfg(feature = "complete")]
    CompleteBash,
    /// `_NAME` (for /usr/share/zsh/vendor-completions/).
    #[cfg(feature = "complete")]
    CompleteZsh,
    /// `NAME.fish` (for /usr/share/fish/vendor_completions.d/).
    #[cfg(feature = "complete")]
    CompleteFish,
}

impl Kind {
    /// Every kind this build writes, by its name on the command line.
    const ALL: &[(&str, Kind)] = &[
        ("man", Kind::Man),
        #[cfg(feature = "complete")]
        ("complete-bash", Kind::CompleteBash),
        #[cfg(feature = "complete")]
        ("complete-zsh", Kind::CompleteZsh),
        #[cfg(feature = "complete")]
        ("complete-fish", Kind::CompleteFish),
    ];
}

/// Runs `--generate` for `cmd` (the binary's `Args::command()`) with its
/// pages in man `section`, from the process's arguments, and prints each
/// file written; the exit code says whether it worked.
pub fn main(cmd: clap::Command, section: &str) -> ExitCode {
    let name = cmd.get_name().to_string();
    let request = match parse(&name, std::env::args_os().skip(1)) {
        Ok(request) => request,
        Err(e) => e.exit(),
    };
    match write(cmd, section, request.0, &request.1) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "{name}: failed to generate into {}: {e}",
                request.1.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// `--generate KIND DIR`, and nothing else.
fn parse(
    name: &str,
    args: impl IntoIterator<Item = OsString>,
) -> Result<(Kind, PathBuf), clap::Error> {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|(text, _)| *text).collect();
    let matches = clap::Command::new("generate")
        .bin_name(name)
        .no_binary_name(true)
        .arg(
            clap::Arg::new("kind")
                .long("generate")
                .value_name("KIND")
                .required(true)
                .value_parser(clap::builder::PossibleValuesParser::new(kinds).map(|text| {
                    Kind::ALL
                        .iter()
                        .find(|(name, _)| *name == text)
                        .map_or(Kind::Man, |(_, kind)| *kind)
                })),
        )
        .arg(
            clap::Arg::new("dir")
                .value_name("DIR")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf)),
        )
        .try_get_matches_from(args)?;
    // Both are required: clap has refused a command line without them.
    let kind = matches
        .get_one::<Kind>("kind")
        .copied()
        .unwrap_or(Kind::Man);
    let dir = matches
        .get_one::<PathBuf>("dir")
        .cloned()
        .unwrap_or_default();
    Ok((kind, dir))
}

/// Writes `kind` for `cmd` into `dir` (created if missing); returns the
/// files written.
pub fn write(
    mut cmd: clap::Command,
    section: &str,
    kind: Kind,
    dir: &Path,
) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    // `help` is not a command of its own page; building names the
    // subcommands (display name guestcomm-vm-add, bin name guestcomm vm add).
    cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    match kind {
        Kind::Man => {
            let mut files = Vec::new();
            man_pages(&cmd, section, dir, &mut files)?;
            Ok(files)
        }
        #[cfg(feature = "complete")]
        Kind::CompleteBash => complete(&mut cmd, clap_complete::Shell::Bash, dir, "{}.bash"),
        #[cfg(feature = "complete")]
        Kind::CompleteZsh => complete(&mut cmd, clap_complete::Shell::Zsh, dir, "_{}"),
        #[cfg(feature = "complete")]
        Kind::CompleteFish => complete(&mut cmd, clap_complete::Shell::Fish, dir, "{}.fish"),
    }
}

/// The page of `cmd` (named by its display name once built:
/// `guestcomm-vm-add`), then those of its visible subcommands.
fn man_pages(
    cmd: &clap::Command,
    section: &str,
    dir: &Path,
    files: &mut Vec<PathBuf>,
) -> io::Result<()> {
    files.push(
        clap_mangen::Man::new(cmd.clone())
            .section(section)
            .generate_to(dir)?,
    );
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        man_pages(sub, section, dir, files)?;
    }
    Ok(())
}

/// The completion script of `shell` for `cmd`, in the file named by
/// `pattern` with `{}` the command's name (where the shell looks for it).
#[cfg(feature = "complete")]
fn complete(
    cmd: &mut clap::Command,
    shell: clap_complete::Shell,
    dir: &Path,
    pattern: &str,
) -> io::Result<Vec<PathBuf>> {
    let name = cmd.get_name().to_string();
    let path = dir.join(pattern.replace("{}", &name));
    let mut script = Vec::new();
    clap_complete::generate(shell, cmd, name, &mut script);
    fs::write(&path, script)?;
    Ok(vec![path])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("tool")
            .about("A tool")
            .subcommand(
                clap::Command::new("vm")
                    .about("VMs")
                    .subcommand(clap::Command::new("add").about("Add a VM")),
            )
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn man_writes_a_page_per_visible_subcommand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write(sample(), "1", Kind::Man, dir.path()).expect("write");
        let names: Vec<_> = files
            .iter()
            .map(|f| {
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["tool.1", "tool-vm.1", "tool-vm-add.1"]);
        let page = fs::read_to_string(dir.path().join("tool-vm-add.1")).expect("page");
        assert!(page.contains(".TH tool-vm-add 1"), "{page}");
        assert!(page.contains("Add a VM"), "{page}");
    }

    #[test]
    fn parse_takes_kind_and_dir_and_refuses_the_rest() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        let (kind, dir) = parse("tool", args(&["--generate", "man", "out"])).expect("parse");
        assert_eq!((kind, dir), (Kind::Man, PathBuf::from("out")));
        assert!(parse("tool", args(&["--generate", "manual", "out"])).is_err());
        assert!(parse("tool", args(&["--generate", "man"])).is_err());
        assert!(parse("tool", args(&["--generate", "man", "out", "more"])).is_err());
    }

    #[cfg(feature = "complete")]
    #[test]
    fn completions_name_their_files_as_the_shells_look_for_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (kind, file) in [
            (Kind::CompleteBash, "tool.bash"),
            (Kind::CompleteZsh, "_tool"),
            (Kind::CompleteFish, "tool.fish"),
        ] {
            let files = write(sample(), "1", kind, dir.path()).expect("write");
            assert_eq!(files, [dir.path().join(file)]);
            let script = fs::read_to_string(&files[0]).expect("script");
            assert!(script.contains("vm"), "{file}: {script}");
        }
    }
}
