//! RUN steps: the command line, its mounts and the container.

use std::path::Path;

use gcr_grammar::{CommandLine, Instruction, MountType, NetworkMode};

use super::state::State;
use super::{heredoc_text, Engine};
use crate::cache;
use crate::error::{StepFailure, StepResult};
use crate::fsutil::{self, Confine};
use crate::run::{RunMount, RunStep};
use crate::source;

/// Where a `RUN <<EOF` script with a `#!` line is mounted (inside the container's /dev tmpfs,
/// so nothing of it reaches the layer).
const HEREDOC_SCRIPT: &str = "/dev/.gcr-heredoc-script";

impl Engine<'_> {
    pub(super) fn run_instruction(
        &mut self,
        stage: usize,
        state: &mut State,
        instr: &Instruction,
        r: &gcr_grammar::RunInstruction,
        progress: &str,
    ) -> StepResult<()> {
        // `RUN <<EOF` with a `#!` line: the body is a script run by its own interpreter.
        let mut shebang_script: Option<String> = None;
        let argv = match &r.command {
            CommandLine::Exec(v) => {
                if v.is_empty() {
                    return Err("RUN with an empty command".to_string().into());
                }
                v.clone()
            }
            CommandLine::Shell(cmd) => {
                let mut script = cmd.clone();
                let only_heredoc = r.heredocs.len() == 1
                    && cmd.trim().starts_with("<<")
                    && !cmd.trim().contains(' ');
                if only_heredoc {
                    let h = &r.heredocs[0];
                    script = heredoc_text(h);
                    if script.starts_with("#!") {
                        shebang_script = Some(script.clone());
                    }
                } else {
                    for h in &r.heredocs {
                        script.push('\n');
                        script.push_str(&h.content);
                        script.push_str(&h.name);
                    }
                }
                if shebang_script.is_some() {
                    vec![HEREDOC_SCRIPT.to_string()]
                } else {
                    let mut v = state.shell();
                    v.push(script);
                    v
                }
            }
        };
        // As BuildKit: only with the entitlement granted on the command line.
        let privileged = r.security == gcr_grammar::SecurityMode::Insecure;
        if privileged && !self.opts.allow_insecure {
            return Err(
                "RUN --security=insecure needs the entitlement: gcr build --allow security.insecure"
                    .to_string()
                    .into(),
            );
        }
        let network_none = match r.network {
            NetworkMode::None => true,
            NetworkMode::Host => false,
            NetworkMode::Default => self.opts.network_none,
        };
        // Mount specs, resolved now so the cache key sees their sources.
        let mut mount_specs = Vec::new();
        let mut ssh_mounts = 0;
        for m in &r.mounts {
            let target = match &m.target {
                Some(t) => self.expand(state, t)?,
                None => match m.kind {
                    MountType::Secret => {
                        format!("/run/secrets/{}", m.id.clone().unwrap_or_default())
                    }
                    // BuildKit's default place for the agent sockets.
                    MountType::Ssh => {
                        ssh_mounts += 1;
                        format!("/run/buildkit/ssh_agent.{}", ssh_mounts - 1)
                    }
                    _ => return Err("RUN --mount needs a target".to_string().into()),
                },
            };
            let target = if target.starts_with('/') {
                target
            } else {
                format!("{}/{}", state.workdir().trim_end_matches('/'), target)
            };
            mount_specs.push((m.clone(), target));
        }
        // What bind mounts show the command is part of its cache key, as in BuildKit.
        let mut bind_sources = Vec::new();
        for (m, _) in &mount_specs {
            if m.kind != MountType::Bind {
                continue;
            }
            let src = self.expand(state, m.source.as_deref().unwrap_or(""))?;
            match &m.from {
                None => {
                    let ctx = self
                        .context
                        .as_ref()
                        .ok_or_else(|| "the build context is not open".to_string())?;
                    let src = if src.is_empty() { ".".to_string() } else { src };
                    let collected = ctx
                        .collect(std::slice::from_ref(&src))
                        .map_err(|e| format!("mount source: {e}"))?;
                    bind_sources.push(
                        source::content_hash(&collected.entries).map_err(StepFailure::Message)?,
                    );
                }
                Some(from) => {
                    let name = self.expand(state, from)?;
                    if let Some((_, dir)) = self.context_dir(&name, stage) {
                        let tree = crate::source::SourceTree {
                            root: dir,
                            confine: Confine::Beneath,
                            ignore: None,
                            label: format!("build context {name}"),
                            preserve_owner: false,
                            exclude: None,
                            parents: false,
                        };
                        let src = if src.is_empty() { ".".to_string() } else { src };
                        let collected = tree
                            .collect(std::slice::from_ref(&src))
                            .map_err(|e| format!("mount source: {e}"))?;
                        bind_sources.push(
                            source::content_hash(&collected.entries)
                                .map_err(StepFailure::Message)?,
                        );
                        continue;
                    }
                    let (from_state, _) = self.source_state(stage, state, from)?;
                    bind_sources.push(format!("{}:{src}", from_state.key));
                }
            }
        }
        let mut key_text = format!(
            "RUN\n{}\nnetwork_none={network_none}\nprivileged={privileged}\nargv={argv:?}\nbinds={bind_sources:?}\nmounts={:?}",
            instr.raw.original.trim(),
            mount_specs
                .iter()
                .map(|(m, t)| format!("{:?}:{t}:{:?}:{:?}", m.kind, m.source, m.from))
                .collect::<Vec<_>>()
        );
        // Part of the step as BuildKit's ExecOp holds them (older keys stay as they were).
        let opts = &self.opts;
        if !opts.extra_hosts.is_empty() || !opts.rlimits.is_empty() || opts.shm_size.is_some() {
            let limits: Vec<String> = opts
                .rlimits
                .iter()
                .map(|r| format!("{:?}={}:{}", r.typ(), r.soft(), r.hard()))
                .collect();
            key_text.push_str(&format!(
                "\nhosts={:?}\nulimits={limits:?}\nshm={:?}",
                opts.extra_hosts, opts.shm_size
            ));
        }
        let env = state.run_env();
        let cwd = state.workdir();
        let user = state.config.user.clone();
        let platform = state.platform.clone();
        self.layer_step(state, instr, progress, &key_text, |eng, st, dirs| {
            // Checked on a cache miss only: a cached foreign step needs no emulator.
            crate::binfmt::check_host(&platform).map_err(StepFailure::Message)?;
            let mut mounts = Vec::new();
            let mut ssh_env: Option<String> = None;
            let mut secret_env: Vec<String> = Vec::new();
            let mut views = Vec::new();
            if let Some(script) = &shebang_script {
                let path = dirs.base.join("heredoc-script");
                std::fs::write(&path, script)
                    .and_then(|_| {
                        std::fs::set_permissions(
                            &path,
                            std::os::unix::fs::PermissionsExt::from_mode(0o755),
                        )
                    })
                    .map_err(|e| crate::error::io_fail("writing", &path, e))?;
                mounts.push(RunMount::Bind {
                    source: path,
                    target: HEREDOC_SCRIPT.to_string(),
                    read_only: true,
                });
            }
            for (m, target) in &mount_specs {
                match m.kind {
                    MountType::Tmpfs => mounts.push(RunMount::Tmpfs {
                        target: target.clone(),
                        options: m.size.map(|s| format!("size={s}")).unwrap_or_default(),
                    }),
                    MountType::Cache => {
                        let id = m.id.clone().unwrap_or_else(|| target.clone());
                        let dir = eng
                            .store
                            .cache_dir()
                            .join("mounts")
                            .join(cache::key(&["cache-mount", &id]));
                        if !dir.exists() {
                            std::fs::create_dir_all(&dir)
                                .map_err(|e| crate::error::io_fail("creating", &dir, e))?;
                            let mode = m.mode.unwrap_or(0o755);
                            let _ = std::fs::set_permissions(
                                &dir,
                                std::os::unix::fs::PermissionsExt::from_mode(mode),
                            );
                            let _ = std::os::unix::fs::lchown(
                                &dir,
                                Some(m.uid.unwrap_or(0)),
                                Some(m.gid.unwrap_or(0)),
                            );
                        }
                        mounts.push(RunMount::Bind {
                            source: dir,
                            target: target.clone(),
                            read_only: m.read_only,
                        });
                    }
                    MountType::Bind => {
                        let src = m.source.clone().unwrap_or_default();
                        let src = eng.expand(st, &src)?;
                        let root = match &m.from {
                            None => eng
                                .context
                                .as_ref()
                                .map(|c| (c.root.clone(), Confine::Beneath))
                                .ok_or_else(|| "the build context is not open".to_string())?,
                            Some(from)
                                if eng.context_dir(&eng.expand(st, from)?, stage).is_some() =>
                            {
                                let name = eng.expand(st, from)?;
                                eng.context_dir(&name, stage)
                                    .map(|(_, dir)| (dir, Confine::Beneath))
                                    .ok_or_else(|| format!("build context {name} went away"))?
                            }
                            Some(from) => {
                                let (from_state, _) = eng.source_state(stage, st, from)?;
                                let at = dirs.base.join(format!("bind-{}", views.len()));
                                views.push(eng.mount_view(&from_state, &at)?);
                                (at, Confine::InRoot)
                            }
                        };
                        let rel = fsutil::clean_relative(&src)
                            .ok_or_else(|| format!("mount source {src:?} is outside its root"))?;
                        let host = fsutil::resolve(&root.0, &rel, root.1)
                            .map_err(|e| format!("mount source {src:?}: {e}"))?;
                        if m.read_only {
                            mounts.push(RunMount::Bind {
                                source: host,
                                target: target.clone(),
                                read_only: true,
                            });
                        } else {
                            // rw: the command may write, BuildKit throws the writes away. A
                            // directory gets an overlay with a scratch upper dir; a file a copy.
                            let scratch = dirs.base.join(format!("bind-rw-{}", mounts.len()));
                            let made = |p: &std::path::Path| {
                                std::fs::create_dir_all(p)
                                    .map_err(|e| crate::error::io_fail("creating", p, e))
                            };
                            if host.is_dir() && eng.userxattr && has_unmapped_owner(&host) {
                                // Rootless, files whose owner this user namespace cannot name
                                // (a context owned by root) cannot be copied up by overlay
                                // (EOVERFLOW): the command gets a copy owned by its root.
                                let copy = scratch.join("copy");
                                copy_tree(&host, &copy)
                                    .map_err(|e| crate::error::io_fail("copying", &host, e))?;
                                mounts.push(RunMount::Bind {
                                    source: copy,
                                    target: target.clone(),
                                    read_only: false,
                                });
                            } else if host.is_dir() {
                                let (upper, work) = (scratch.join("upper"), scratch.join("work"));
                                made(&upper)?;
                                made(&work)?;
                                mounts.push(RunMount::Overlay {
                                    lower: host,
                                    upper,
                                    work,
                                    target: target.clone(),
                                });
                            } else {
                                made(&scratch)?;
                                let copy = scratch.join("file");
                                std::fs::copy(&host, &copy)
                                    .map_err(|e| crate::error::io_fail("copying", &host, e))?;
                                mounts.push(RunMount::Bind {
                                    source: copy,
                                    target: target.clone(),
                                    read_only: false,
                                });
                            }
                        }
                    }
                    MountType::Secret => {
                        let id =
                            m.id.clone()
                                .or_else(|| {
                                    Path::new(target)
                                        .file_name()
                                        .map(|n| n.to_string_lossy().into_owned())
                                })
                                .unwrap_or_default();
                        match eng.opts.secrets.iter().find(|(i, _)| i == &id) {
                            Some((_, path)) => {
                                // `env=NAME`: the value as a variable of this step only (not
                                // in the cache key or the image); a file as well only when a
                                // target is given too, as BuildKit.
                                if let Some(name) = &m.env {
                                    let value = read_secret(path).map_err(|e| {
                                        format!("secret {id} ({}): {e}", path.display())
                                    })?;
                                    secret_env.push(format!("{name}={value}"));
                                }
                                if m.env.is_none() || m.target.is_some() {
                                    // A copy with BuildKit's owner and mode (0400 root unless
                                    // uid/gid/mode say otherwise), outside every layer.
                                    let copy = dirs.base.join(format!("secret-{}", mounts.len()));
                                    std::fs::copy(path, &copy)
                                        .and_then(|_| {
                                            std::os::unix::fs::lchown(
                                                &copy,
                                                Some(m.uid.unwrap_or(0)),
                                                Some(m.gid.unwrap_or(0)),
                                            )
                                        })
                                        .and_then(|_| {
                                            std::fs::set_permissions(
                                                &copy,
                                                std::os::unix::fs::PermissionsExt::from_mode(
                                                    m.mode.unwrap_or(0o400),
                                                ),
                                            )
                                        })
                                        .map_err(|e| crate::error::io_fail("copying", path, e))?;
                                    mounts.push(RunMount::Bind {
                                        source: copy,
                                        target: target.clone(),
                                        read_only: true,
                                    });
                                }
                            }
                            None if m.required => {
                                return Err(format!(
                                "secret {id} is required: pass it with --secret id={id},src=FILE"
                            )
                                .into())
                            }
                            None => {}
                        }
                    }
                    MountType::Ssh => {
                        let id = m.id.clone().unwrap_or_else(|| "default".to_string());
                        match eng.opts.ssh.iter().find(|(i, _)| i == &id) {
                            Some((_, socket)) => {
                                // As BuildKit: the first agent mount is the one ssh finds.
                                if ssh_env.is_none() {
                                    ssh_env = Some(format!("SSH_AUTH_SOCK={target}"));
                                }
                                mounts.push(RunMount::Bind {
                                    source: socket.clone(),
                                    target: target.clone(),
                                    read_only: true,
                                });
                            }
                            None if m.required => {
                                return Err(format!(
                                    "ssh agent {id} is required: pass it with --ssh {id}[=SOCKET]"
                                )
                                .into())
                            }
                            None => {}
                        }
                    }
                }
            }
            let lower = eng.overlay_lower(st)?;
            let mut env = env.clone();
            env.extend(ssh_env);
            env.extend(secret_env);
            let step = RunStep {
                argv: argv.clone(),
                env,
                cwd: cwd.clone(),
                user: user.clone(),
                network_none,
                privileged,
                lower,
                upper: &dirs.upper,
                work: &dirs.work,
                state_dir: &dirs.base.join("state"),
                userxattr: eng.userxattr,
                mounts,
                quiet: eng.opts.quiet,
                extra_hosts: eng.opts.extra_hosts.clone(),
                rlimits: eng.opts.rlimits.clone(),
                shm_size: eng.opts.shm_size,
            };
            let result = crate::run::run_step(&step);
            drop(views);
            result
        })
    }
}

/// True when something under `dir` shows the overflow id: an owner this user namespace does
/// not map.
fn has_unmapped_owner(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let overflow = |file: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .unwrap_or(65534)
    };
    let (uid, gid) = (
        overflow("/proc/sys/kernel/overflowuid"),
        overflow("/proc/sys/kernel/overflowgid"),
    );
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() == uid || meta.gid() == gid {
            return true;
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    false
}

/// Copies a tree (directories, files with their modes, symlinks; other types are skipped),
/// without following symlinks.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        std::fs::set_permissions(to, meta.permissions())
    } else if kind.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)
    } else if kind.is_file() {
        std::fs::copy(from, to).map(|_| ())
    } else {
        Ok(())
    }
}

/// A secret's value for `env=`: text, at most BuildKit's 500 KiB.
fn read_secret(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(500 * 1024 + 1).read_to_end(&mut data))
        .map_err(|e| e.to_string())?;
    if data.len() > 500 * 1024 {
        return Err("larger than 500 KiB".into());
    }
    String::from_utf8(data)
        .map_err(|_| "not UTF-8 text: it cannot be an environment variable".into())
}
