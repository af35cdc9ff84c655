//! The instructions that change the image config (ENV, LABEL, ARG, USER, EXPOSE, VOLUME,
//! STOPSIGNAL, HEALTHCHECK, CMD, ENTRYPOINT, SHELL, ONBUILD, MAINTAINER): no layer, a
//! history entry and a new cache key. WORKDIR changes the config too and makes its
//! directory in a layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gcr_grammar::{CommandLine, Healthcheck, Instruction, InstructionKind};
use serde_json::Value;

use super::state::{State, HISTORY_COMMENT};
use super::Engine;
use crate::cache;
use crate::config::History;
use crate::error::StepResult;
use crate::fsutil;

/// `EXPOSE 80`, `80/udp`, `8000-8002/TCP`: each port as `PORT/proto`, ranges expanded and
/// the protocol lowercased, as BuildKit records them.
fn expose_ports(word: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "EXPOSE {word}: invalid protocol {proto:?}: use tcp, udp or sctp"
        ));
    }
    let number = |n: &str| {
        n.parse::<u16>()
            .map_err(|_| format!("EXPOSE {word}: invalid port {n:?}"))
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => (number(ports)?, number(ports)?),
    };
    if last < first {
        return Err(format!("EXPOSE {word}: the range ends before it starts"));
    }
    Ok((first..=last).map(|p| format!("{p}/{proto}")).collect())
}

impl Engine<'_> {
    /// An instruction that changes only the config (and the cache key and history).
    pub(super) fn config_instruction(
        &mut self,
        state: &mut State,
        instr: &Instruction,
    ) -> StepResult<()> {
        match &instr.kind {
            InstructionKind::From(_) => Err("FROM inside a stage".to_string().into()),
            InstructionKind::Env(pairs) => {
                let env = state.expansion_env();
                let mut text = String::new();
                let mut values = Vec::new();
                for kv in pairs {
                    let key = self.lexer.process_word(&kv.key, &env)?;
                    let value = self.lexer.process_word(&kv.value, &env)?;
                    text.push_str(&format!("{key}={value}\n"));
                    values.push((key, value));
                }
                for (k, v) in values {
                    state.config.set_env(&k, &v);
                }
                self.meta_history(state, instr, &format!("ENV\n{text}"));
                Ok(())
            }
            InstructionKind::Label(pairs) => {
                let env = state.expansion_env();
                let mut text = String::new();
                for kv in pairs {
                    let key = self.lexer.process_word(&kv.key, &env)?;
                    let value = self.lexer.process_word(&kv.value, &env)?;
                    text.push_str(&format!("{key}={value}\n"));
                    state
                        .config
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key, value);
                }
                self.meta_history(state, instr, &format!("LABEL\n{text}"));
                Ok(())
            }
            InstructionKind::Arg(defs) => {
                let mut text = String::new();
                for def in defs {
                    self.declared.insert(def.name.clone());
                    let value = if let Some(v) = self.build_args.get(&def.name) {
                        Some(v.clone())
                    } else if let Some(d) = &def.default {
                        Some(self.expand(state, d)?)
                    } else if let Some((_, v)) = self.globals.iter().find(|(k, _)| k == &def.name) {
                        v.clone()
                    } else {
                        self.platform_args()
                            .into_iter()
                            .find(|(k, _)| k == &def.name)
                            .map(|(_, v)| v)
                    };
                    text.push_str(&format!("{}={:?}\n", def.name, value));
                    state.args.retain(|(k, _)| k != &def.name);
                    state.args.push((def.name.clone(), value));
                }
                self.meta_history(state, instr, &format!("ARG\n{text}"));
                Ok(())
            }
            InstructionKind::User(u) => {
                let u = self.expand(state, u)?;
                state.config.user = Some(u.clone());
                self.meta_history(state, instr, &format!("USER\n{u}"));
                Ok(())
            }
            InstructionKind::Expose(ports) => {
                let env = state.expansion_env();
                let mut text = String::new();
                for p in ports {
                    for word in self.lexer.process_words(p, &env)? {
                        for port in expose_ports(&word)? {
                            text.push_str(&port);
                            text.push('\n');
                            state
                                .config
                                .exposed_ports
                                .get_or_insert_with(BTreeMap::new)
                                .insert(port, Value::Object(Default::default()));
                        }
                    }
                }
                self.meta_history(state, instr, &format!("EXPOSE\n{text}"));
                Ok(())
            }
            InstructionKind::Volume(vols) => {
                let mut text = String::new();
                for v in vols {
                    let v = self.expand(state, v)?;
                    if v.trim().is_empty() {
                        return Err("VOLUME specified can not be an empty string"
                            .to_string()
                            .into());
                    }
                    text.push_str(&v);
                    text.push('\n');
                    state
                        .config
                        .volumes
                        .get_or_insert_with(BTreeMap::new)
                        .insert(v, Value::Object(Default::default()));
                }
                self.meta_history(state, instr, &format!("VOLUME\n{text}"));
                Ok(())
            }
            InstructionKind::StopSignal(s) => {
                let s = self.expand(state, s)?;
                state.config.stop_signal = Some(s.clone());
                self.meta_history(state, instr, &format!("STOPSIGNAL\n{s}"));
                Ok(())
            }
            InstructionKind::Healthcheck(h) => {
                let value = match h {
                    Healthcheck::None => serde_json::json!({ "Test": ["NONE"] }),
                    Healthcheck::Check(c) => {
                        let test: Vec<String> = match &c.test {
                            CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                            CommandLine::Exec(v) => std::iter::once("CMD".to_string())
                                .chain(v.clone())
                                .collect(),
                        };
                        let mut m = serde_json::Map::new();
                        m.insert("Test".into(), serde_json::json!(test));
                        let dur = |d: &Option<std::time::Duration>| {
                            d.map(|d| serde_json::json!(d.as_nanos() as u64))
                        };
                        for (k, v) in [
                            ("Interval", dur(&c.interval)),
                            ("Timeout", dur(&c.timeout)),
                            ("StartPeriod", dur(&c.start_period)),
                            ("StartInterval", dur(&c.start_interval)),
                            ("Retries", c.retries.map(|r| serde_json::json!(r))),
                        ] {
                            if let Some(v) = v {
                                m.insert(k.into(), v);
                            }
                        }
                        Value::Object(m)
                    }
                };
                let text = value.to_string();
                state.config.healthcheck = Some(value);
                self.meta_history(state, instr, &format!("HEALTHCHECK\n{text}"));
                Ok(())
            }
            InstructionKind::Cmd(cl) => {
                let v = self.command_vec(state, cl);
                state.config.cmd = Some(v.clone());
                state.cmd_set = true;
                self.meta_history(state, instr, &format!("CMD\n{v:?}"));
                Ok(())
            }
            InstructionKind::Entrypoint(cl) => {
                let v = self.command_vec(state, cl);
                state.config.entrypoint = Some(v.clone());
                if !state.cmd_set {
                    state.config.cmd = None;
                }
                self.meta_history(state, instr, &format!("ENTRYPOINT\n{v:?}"));
                Ok(())
            }
            InstructionKind::Shell(v) => {
                state.config.shell = Some(v.clone());
                self.meta_history(state, instr, &format!("SHELL\n{v:?}"));
                Ok(())
            }
            InstructionKind::Onbuild(trigger) => {
                let text = trigger.raw.original.trim().to_string();
                state
                    .config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(text.clone());
                self.meta_history(state, instr, &format!("ONBUILD\n{text}"));
                Ok(())
            }
            InstructionKind::Maintainer(m) => {
                self.meta_history(state, instr, &format!("MAINTAINER\n{m}"));
                Ok(())
            }
            InstructionKind::Run(_)
            | InstructionKind::Copy(_)
            | InstructionKind::Add(_)
            | InstructionKind::Workdir(_) => {
                Err(format!("{} makes a layer: it is not a config change", instr.name()).into())
            }
        }
    }

    /// WORKDIR: the config's working directory, and the directory made in a layer.
    pub(super) fn workdir_instruction(
        &mut self,
        state: &mut State,
        instr: &Instruction,
        w: &str,
        progress: &str,
    ) -> StepResult<()> {
        let w = self.expand(state, w)?;
        let joined = if w.starts_with('/') {
            PathBuf::from(&w)
        } else {
            Path::new(&state.workdir()).join(&w)
        };
        let clean = fsutil::clean_relative(&joined.to_string_lossy()).unwrap_or_default();
        let abs = format!("/{}", clean.display());
        state.config.working_dir = Some(abs.clone());
        let key_text = format!("WORKDIR\n{abs}");
        self.layer_step(state, instr, progress, &key_text, |eng, st, dirs| {
            let mount = eng.mount_rw(st, dirs)?;
            // As BuildKit: missing directories belong to the current USER.
            let owner = match st.config.user.as_deref().filter(|u| !u.is_empty()) {
                Some(user) => {
                    let ids = gcr_runtime::users::resolve_user(mount.path(), user)
                        .map_err(|e| format!("USER {user}: {e}"))?;
                    (ids.uid, ids.gid)
                }
                None => (0, 0),
            };
            let mut created = Vec::new();
            fsutil::mkdir_in_root(mount.path(), &clean, owner, &mut created)
                .map_err(|e| format!("cannot create {abs}: {e}"))?;
            Ok(())
        })
    }

    fn command_vec(&self, state: &State, cl: &CommandLine) -> Vec<String> {
        match cl {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = state.shell();
                v.push(s.clone());
                v
            }
        }
    }

    /// A config change's cache key and history entry (no layer).
    fn meta_history(&self, state: &mut State, instr: &Instruction, key_part: &str) {
        state.key = cache::key(&[&state.key, "meta", key_part]);
        state.history.push(History {
            created: Some(state.time.clone()),
            created_by: Some(instr.raw.original.trim().to_string()),
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer: true,
        });
    }
}
