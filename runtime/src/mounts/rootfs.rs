//! The container's root filesystem: a bind of a directory, an overlay of image layers (by
//! mount(2), or the new mount API when the layers do not fit in one page of options), or the
//! idmapped mount the parent prepared.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::error::{mount_err, RuntimeError};
use crate::plan::{Plan, RootfsSource};
use crate::sys;

/// Mounts the rootfs at its mount point; returns that path.
pub(super) fn mount_rootfs(plan: &Plan) -> Result<PathBuf, RuntimeError> {
    if let Some(prepared) = &plan.prepared {
        let target = match &plan.opts.rootfs {
            RootfsSource::Directory(dir) => dir.clone(),
            RootfsSource::Overlay { .. } => plan.rootfs_mountpoint.clone(),
        };
        // A mount fd from the parent can only go where this namespace can name it, and the
        // mount point's path may be out of our reach: stack it on "/" (which path lookups do
        // not enter); `pivot` then enters it by its fd.
        sys::move_mount_fd(&prepared.rootfs, c"/")
            .map_err(|e| mount_err("idmapped rootfs", &target, e))?;
        return Ok(target);
    }
    match &plan.opts.rootfs {
        RootfsSource::Directory(dir) => {
            mount(
                Some(dir.as_path()),
                dir.as_path(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| mount_err("rootfs", dir, e))?;
            Ok(dir.clone())
        }
        RootfsSource::Overlay {
            lower,
            upper,
            work,
            userxattr,
        } => {
            let target = plan.rootfs_mountpoint.clone();
            let mut data = overlay_data(lower, upper, work, *userxattr)?;
            if plan.opts.overlay_volatile {
                data.push_str(",volatile");
            }
            if !*userxattr {
                // Image layers are untrusted: never follow redirect or metacopy xattrs in them,
                // whatever the kernel's defaults (rootless userxattr mounts never do).
                data.push_str(",redirect_dir=off,metacopy=off");
            }
            if data.len() >= 4000 {
                // Too many layers for mount(2)'s one page of options: add them one by one.
                return mount_overlay_by_parts(plan, &target, lower, upper, work, *userxattr);
            }
            mount(
                Some("overlay"),
                target.as_path(),
                Some("overlay"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(|e| mount_err("overlay", &target, e))?;
            Ok(target)
        }
    }
}

fn mount_overlay_by_parts(
    plan: &Plan,
    target: &Path,
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    userxattr: bool,
) -> Result<PathBuf, RuntimeError> {
    overlay_by_parts(
        target,
        lower,
        upper,
        work,
        userxattr,
        plan.opts.overlay_volatile,
    )?;
    Ok(target.to_path_buf())
}

/// An overlay of many layers through the new mount API (one `lowerdir+` each).
fn overlay_by_parts(
    target: &Path,
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    userxattr: bool,
    volatile: bool,
) -> Result<(), RuntimeError> {
    let c = |p: &Path| {
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).map_err(
            |_| RuntimeError::InvalidSpec(format!("overlay path {} contains NUL", p.display())),
        )
    };
    let lowers = lower.iter().map(|l| c(l)).collect::<Result<Vec<_>, _>>()?;
    let mut flags: Vec<&std::ffi::CStr> = Vec::new();
    if userxattr {
        flags.push(c"userxattr");
    }
    if volatile {
        flags.push(c"volatile");
    }
    let mut strings: Vec<(&std::ffi::CStr, &std::ffi::CStr)> = Vec::new();
    if !userxattr {
        strings.push((c"redirect_dir", c"off"));
        strings.push((c"metacopy", c"off"));
    }
    crate::sys::mount_overlay_fsconfig(
        &c(target)?,
        &lowers,
        &c(upper)?,
        &c(work)?,
        &flags,
        &strings,
    )
    .map_err(|(what, e)| RuntimeError::sys(format!("{what} ({} layers)", lower.len()), e))
}

/// Mounts `rootfs` at `target` in the caller's mount namespace, not volatile, with the same
/// options as a container's (for `gcr cp` on a stopped container).
pub(crate) fn mount_overlay_at(rootfs: &RootfsSource, target: &Path) -> Result<(), RuntimeError> {
    match rootfs {
        RootfsSource::Directory(dir) => mount(
            Some(dir.as_path()),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| mount_err("rootfs", target, e)),
        RootfsSource::Overlay {
            lower,
            upper,
            work,
            userxattr,
        } => {
            let mut data = overlay_data(lower, upper, work, *userxattr)?;
            if !*userxattr {
                data.push_str(",redirect_dir=off,metacopy=off");
            }
            if data.len() >= 4000 {
                return overlay_by_parts(target, lower, upper, work, *userxattr, false);
            }
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(|e| mount_err("overlay", target, e))
        }
    }
}

fn overlay_data(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    userxattr: bool,
) -> Result<String, RuntimeError> {
    if lower.is_empty() {
        return Err(RuntimeError::InvalidSpec(
            "overlay rootfs without lower dirs".into(),
        ));
    }
    let check = |p: &Path| -> Result<String, RuntimeError> {
        let s = p.to_str().ok_or_else(|| {
            RuntimeError::InvalidSpec(format!("overlay path {} is not UTF-8", p.display()))
        })?;
        if s.contains([',', ':']) {
            return Err(RuntimeError::InvalidSpec(format!(
                "overlay path {s} contains ',' or ':'"
            )));
        }
        Ok(s.to_string())
    };
    let mut lowers = Vec::new();
    for l in lower {
        lowers.push(check(l)?);
    }
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        check(upper)?,
        check(work)?
    );
    if userxattr {
        data.push_str(",userxattr");
    }
    Ok(data)
}
