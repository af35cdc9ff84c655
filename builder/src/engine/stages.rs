//! The stages: their bases, which the target needs, and one stage built instruction by
//! instruction (ONBUILD triggers of its base first).

use std::collections::BTreeSet;

use gcr_grammar::{Instruction, InstructionKind};

use super::state::{State, DEFAULT_PATH};
use super::Engine;
use crate::config::Platform;
use crate::error::{BuildError, StepFailure, StepResult};

/// Where a stage starts.
#[derive(Debug, Clone)]
pub(super) enum Base {
    Scratch,
    Stage(usize),
    Image(String),
}

impl Engine<'_> {
    pub(super) fn stage_label(&self, index: usize) -> String {
        self.cf.stages[index]
            .name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("stage-{index}"))
    }

    pub(super) fn find_stage(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_lowercase();
        if let Some(i) = self.cf.stages[..before]
            .iter()
            .position(|s| s.name() == Some(lower.as_str()))
        {
            return Some(i);
        }
        match name.parse::<usize>() {
            Ok(i) if i < before => Some(i),
            _ => None,
        }
    }

    pub(super) fn bases(&self) -> Result<Vec<Base>, BuildError> {
        let env = self.global_env();
        let mut out = Vec::new();
        for (i, stage) in self.cf.stages.iter().enumerate() {
            let image = self
                .lexer
                .process_word(stage.base(), &env)
                .map_err(|e| self.fail(&stage.from, e.into()))?;
            if image.is_empty() {
                return Err(self.fail(
                    &stage.from,
                    StepFailure::Message("the base image name is empty".into()),
                ));
            }
            let lower = image.to_lowercase();
            let base = if lower == "scratch" {
                Base::Scratch
            } else if let Some(j) = self.cf.stages[..i]
                .iter()
                .position(|s| s.name() == Some(lower.as_str()))
            {
                Base::Stage(j)
            } else {
                Base::Image(image)
            };
            out.push(base);
        }
        Ok(out)
    }

    pub(super) fn target_index(&self) -> Result<usize, BuildError> {
        match &self.opts.target {
            None => Ok(self.cf.stages.len().saturating_sub(1)),
            Some(t) => {
                let lower = t.to_lowercase();
                self.cf
                    .stages
                    .iter()
                    .position(|s| s.name() == Some(lower.as_str()))
                    .ok_or_else(|| BuildError::UnknownTarget {
                        target: t.clone(),
                        stages: self
                            .cf
                            .stages
                            .iter()
                            .filter_map(|s| s.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    }

    /// The stages `target` depends on (through FROM, COPY --from, RUN --mount from).
    pub(super) fn needed(&self, target: usize, bases: &[Base]) -> BTreeSet<usize> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if needed.insert(i) {
                todo.extend(self.stage_deps(i, bases));
            }
        }
        needed
    }

    fn vertices(instrs: &[Instruction]) -> usize {
        1 + instrs
            .iter()
            .filter(|i| {
                matches!(
                    i.kind,
                    InstructionKind::Run(_)
                        | InstructionKind::Copy(_)
                        | InstructionKind::Add(_)
                        | InstructionKind::Workdir(_)
                )
            })
            .count()
    }

    pub(super) fn build_stage(
        &mut self,
        index: usize,
        bases: &[Base],
    ) -> Result<State, BuildError> {
        let stage = self.cf.stages[index].clone();
        // BuildKit names the stage in progress lines only when there are several or it has
        // a name: `[builder 2/5]`, `[stage-1 2/5]`, else `[2/5]`.
        let label = if self.cf.stages.len() == 1 && self.cf.stages[index].name().is_none() {
            String::new()
        } else {
            format!("{} ", self.stage_label(index))
        };
        // `FROM --platform=...` (often $BUILDPLATFORM) picks the stage's platform; else the
        // build's target.
        let mut platform = self.target.clone();
        if let InstructionKind::From(f) = &stage.from.kind {
            if let Some(p) = &f.platform {
                let p = self
                    .lexer
                    .process_word(p, &self.global_env())
                    .map_err(|e| self.fail(&stage.from, e.into()))?;
                platform = Platform::parse(&p)
                    .map_err(|e| self.fail(&stage.from, StepFailure::Message(e)))?;
            }
        }
        let mut state = match &bases[index] {
            Base::Scratch => self.scratch_state(&platform),
            Base::Stage(j) => match &self.built[*j] {
                Some(s) => {
                    let mut s = s.clone();
                    s.args.clear();
                    s.cmd_set = false;
                    s
                }
                None => {
                    return Err(self.fail(
                        &stage.from,
                        StepFailure::Message("the base stage was not built".into()),
                    ))
                }
            },
            Base::Image(name) => {
                let name = &self
                    .context_image(name)
                    .map_err(|e| self.fail(&stage.from, e))?;
                let record = (self.resolve)(name, &platform)
                    .map_err(|e| self.fail(&stage.from, StepFailure::Message(e)))?;
                self.image_state(&record, &platform)
                    .map_err(|e| self.fail(&stage.from, StepFailure::Message(e)))?
            }
        };
        // As BuildKit: a stage whose base sets no PATH (scratch too) gets the default one in
        // its config, not only in its RUN steps.
        let has_path = state
            .config
            .env_list()
            .iter()
            .any(|e| e.split_once('=').map(|(k, _)| k) == Some("PATH"));
        if !has_path {
            state.config.set_env("PATH", DEFAULT_PATH);
        }
        // ONBUILD triggers of the base run first, then are cleared.
        let triggers = state.config.on_build.take().unwrap_or_default();
        let mut instructions = Vec::new();
        for trigger in &triggers {
            let src = format!("FROM scratch\n{trigger}\n");
            let parsed = gcr_grammar::parse(&src).map_err(|e| {
                self.fail(
                    &stage.from,
                    StepFailure::Message(format!(
                        "ONBUILD trigger {trigger:?} of the base image: {e}"
                    )),
                )
            })?;
            if let Some(s) = parsed.stages.into_iter().next() {
                for mut i in s.instructions {
                    i.raw.start_line = stage.from.start_line();
                    i.raw.end_line = stage.from.start_line();
                    instructions.push(i);
                }
            }
        }
        instructions.extend(stage.instructions.iter().cloned());
        let total = Self::vertices(&instructions);
        let n = self.steps.next();
        let base_text = match &bases[index] {
            Base::Scratch => "scratch".to_string(),
            Base::Stage(j) => self.stage_label(*j),
            Base::Image(name) => name.clone(),
        };
        self.say(&format!("#{n} [{label}1/{total}] FROM {base_text}"));
        let mut vertex = 1;
        for instr in &instructions {
            if matches!(
                instr.kind,
                InstructionKind::Run(_)
                    | InstructionKind::Copy(_)
                    | InstructionKind::Add(_)
                    | InstructionKind::Workdir(_)
            ) {
                vertex += 1;
            }
            let progress = format!("[{label}{vertex}/{total}]");
            self.apply(index, &mut state, instr, &progress)
                .map_err(|f| self.fail(instr, f))?;
        }
        Ok(state)
    }

    /// One instruction: RUN, COPY, ADD and WORKDIR make a layer, the others change the
    /// config.
    fn apply(
        &mut self,
        stage: usize,
        state: &mut State,
        instr: &Instruction,
        progress: &str,
    ) -> StepResult<()> {
        match &instr.kind {
            InstructionKind::Run(r) => self.run_instruction(stage, state, instr, r, progress),
            InstructionKind::Copy(c) => {
                self.copy_instruction(stage, state, instr, c, false, progress)
            }
            InstructionKind::Add(c) => {
                self.copy_instruction(stage, state, instr, c, true, progress)
            }
            InstructionKind::Workdir(w) => self.workdir_instruction(state, instr, w, progress),
            _ => self.config_instruction(state, instr),
        }
    }

    /// The state named by `--from` (a stage name or index, else an image).
    pub(super) fn source_state(
        &self,
        stage: usize,
        state: &State,
        from: &str,
    ) -> StepResult<(State, String)> {
        let from = self.expand(state, from)?;
        if let Some(j) = self.find_stage(&from, stage) {
            return match &self.built[j] {
                Some(s) => Ok((s.clone(), format!("stage {}", self.stage_label(j)))),
                None => Err(format!("stage {from} was not built").into()),
            };
        }
        if from.to_lowercase() == "scratch" {
            return Ok((self.scratch_state(&state.platform), "scratch".into()));
        }
        let from = self.context_image(&from)?;
        let record = (self.resolve)(&from, &state.platform).map_err(StepFailure::Message)?;
        let st = self
            .image_state(&record, &state.platform)
            .map_err(StepFailure::Message)?;
        Ok((st, format!("image {from}")))
    }

    /// The `--build-context` of that name.
    pub(super) fn named_context(&self, name: &str) -> Option<&crate::NamedContext> {
        self.opts
            .named_contexts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    /// A directory `--build-context` of that name, unless an earlier stage has the name.
    pub(super) fn context_dir(
        &self,
        name: &str,
        stage: usize,
    ) -> Option<(String, std::path::PathBuf)> {
        if self.find_stage(name, stage).is_some() {
            return None;
        }
        match self.named_context(name) {
            Some(crate::NamedContext::Directory(dir)) => Some((name.to_string(), dir.clone())),
            _ => None,
        }
    }

    /// The image an image name means: a `docker-image://` build context of that name, or
    /// the name itself.
    fn context_image(&self, name: &str) -> StepResult<String> {
        match self.named_context(name) {
            Some(crate::NamedContext::Image(reference)) => Ok(reference.clone()),
            Some(crate::NamedContext::Directory(dir)) => Err(format!(
                "the build context {name} is a directory ({}): use it in COPY --from or RUN --mount from, not as an image",
                dir.display()
            )
            .into()),
            None => Ok(name.to_string()),
        }
    }
}
