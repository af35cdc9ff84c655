//! Foreign-architecture RUN steps: the kernel runs them through a binfmt_misc handler
//! (qemu-user-static). A handler registered with the F flag has its interpreter opened at
//! registration, so it works inside the container's mount and user namespaces; without one
//! the step would fail with an opaque "exec format error", so it is checked first.

use std::path::Path;

use crate::config::Platform;

/// Where binfmt_misc is mounted.
pub(crate) const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The package (Debian's and Ubuntu's name) whose handlers run foreign binaries.
const PACKAGE: &str = "qemu-user-static";

/// qemu's name for an OCI architecture (the handler is `qemu-<name>`).
pub(crate) fn qemu_name(platform: &Platform) -> Option<&'static str> {
    Some(match platform.architecture.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// Whether the host runs `target` binaries natively (its own architecture, or 32-bit x86 on
/// amd64).
pub(crate) fn native(target: &Platform, host: &Platform) -> bool {
    target.architecture == host.architecture
        || (host.architecture == "amd64" && target.architecture == "386")
        || (host.architecture == "arm64" && target.architecture == "arm")
}

/// Checks that RUN steps for `target` can run on `host`, reading the handlers under `dir`
/// (binfmt_misc's mount point). The error says what to install or fix.
pub(crate) fn check(dir: &Path, target: &Platform, host: &Platform) -> Result<(), String> {
    if native(target, host) {
        return Ok(());
    }
    let Some(name) = qemu_name(target) else {
        return Err(format!(
            "RUN for {target} cannot run on this {host} machine: no emulator is known for {}",
            target.architecture
        ));
    };
    let handler = dir.join(format!("qemu-{name}"));
    let text = match std::fs::read_to_string(&handler) {
        Ok(t) => t,
        Err(_) if !dir.join("status").exists() => {
            return Err(format!(
                "RUN for {target} needs binfmt_misc, which is not mounted at {}: mount it \
                 (mount -t binfmt_misc binfmt_misc {}) and install {PACKAGE} \
                 (apt-get install {PACKAGE} binfmt-support)",
                dir.display(),
                dir.display()
            ));
        }
        Err(_) => {
            return Err(format!(
                "RUN for {target} needs the qemu-{name} binfmt_misc handler ({} is missing): \
                 install {PACKAGE} (apt-get install {PACKAGE} binfmt-support)",
                handler.display()
            ));
        }
    };
    if text.lines().next().map(str::trim) != Some("enabled") {
        return Err(format!(
            "RUN for {target}: the binfmt_misc handler {} is disabled: enable it \
             (update-binfmts --enable qemu-{name})",
            handler.display()
        ));
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap_or("");
    if !flags.contains('F') {
        return Err(format!(
            "RUN for {target}: the binfmt_misc handler {} was registered without the F flag, \
             so its interpreter cannot be found inside a container: register it with F \
             ({PACKAGE} with binfmt-support does)",
            handler.display()
        ));
    }
    Ok(())
}

/// [`check`] on the machine's binfmt_misc, mounting it first when it is not (as root only:
/// a rootless build cannot mount it and gets the error saying so).
pub(crate) fn check_host(target: &Platform) -> Result<(), String> {
    let host = Platform::host();
    if native(target, &host) {
        return Ok(());
    }
    let dir = Path::new(BINFMT_DIR);
    if !dir.join("status").exists()
        && nix::unistd::geteuid().is_root()
        && gcr_runtime::userns::rootless_ids().is_none()
    {
        let none: Option<&str> = None;
        if let Err(e) = nix::mount::mount(
            Some("binfmt_misc"),
            dir,
            Some("binfmt_misc"),
            nix::mount::MsFlags::empty(),
            none,
        ) {
            tracing::debug!(error = %e, "mounting binfmt_misc");
        }
    }
    check(dir, target, &host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    fn handlers(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const GOOD: &str =
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n";

    #[test]
    fn native_platforms_need_no_handler() {
        let empty = tempfile::tempdir().unwrap();
        let amd64 = platform("linux/amd64");
        assert!(check(empty.path(), &amd64, &amd64).is_ok());
        assert!(check(empty.path(), &platform("linux/386"), &amd64).is_ok());
    }

    #[test]
    fn a_registered_f_handler_is_enough() {
        let dir = handlers(&[("qemu-aarch64", GOOD)]);
        assert!(check(
            dir.path(),
            &platform("linux/arm64"),
            &platform("linux/amd64")
        )
        .is_ok());
    }

    #[test]
    fn a_missing_handler_names_the_package() {
        let dir = handlers(&[]);
        let e = check(
            dir.path(),
            &platform("linux/arm64"),
            &platform("linux/amd64"),
        )
        .unwrap_err();
        assert!(e.contains("qemu-aarch64"), "{e}");
        assert!(
            e.contains("apt-get install qemu-user-static binfmt-support"),
            "{e}"
        );
        assert!(e.contains("linux/arm64"), "{e}");
    }

    #[test]
    fn an_unmounted_binfmt_misc_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let e = check(
            dir.path(),
            &platform("linux/arm64"),
            &platform("linux/amd64"),
        )
        .unwrap_err();
        assert!(e.contains("not mounted"), "{e}");
        assert!(e.contains("qemu-user-static"), "{e}");
    }

    #[test]
    fn disabled_and_flagless_handlers_are_refused() {
        let dir = handlers(&[
            ("qemu-aarch64", "disabled\nflags: F\n"),
            (
                "qemu-arm",
                "enabled\ninterpreter /usr/bin/qemu-arm-static\nflags: \n",
            ),
        ]);
        let amd64 = platform("linux/amd64");
        let e = check(dir.path(), &platform("linux/arm64"), &amd64).unwrap_err();
        assert!(e.contains("disabled") && e.contains("update-binfmts --enable qemu-aarch64"));
        let e = check(dir.path(), &platform("linux/arm/v7"), &amd64).unwrap_err();
        assert!(e.contains("without the F flag"), "{e}");
    }

    #[test]
    fn platforms_parse_with_aliases() {
        assert_eq!(platform("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(platform("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(platform("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(platform("amd64").to_string(), "linux/amd64");
        assert_eq!(platform("linux/x86_64").to_string(), "linux/amd64");
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert!(Platform::parse("windows/amd64").is_err());
        assert!(Platform::parse("linux/sparc-nope").is_err());
        assert!(platform("linux/arm64").accepts("linux", "arm64", Some("v8")));
        assert!(!platform("linux/arm64").accepts("linux", "amd64", None));
    }
}
