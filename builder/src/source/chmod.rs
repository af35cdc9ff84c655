//! `COPY --chmod` / `ADD --chmod` values, octal or symbolic, applied to an entry's mode.

/// A `--chmod` value: octal, or symbolic as chmod(1) writes it (BuildKit's Dockerfile 1.14
/// takes both), e.g. `u=rwX,go=rX` or `+x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic(Vec<SymbolicClause>),
}

/// `[ugoa]*` followed by operations `[+-=]` with permissions `[rwxXst]*` or a class `[ugo]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SymbolicClause {
    /// Mode bits of the classes named (all of them when none is).
    who: u32,
    ops: Vec<(char, SymbolicPerms)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SymbolicPerms {
    Bits {
        bits: u32,
        conditional_x: bool,
    },
    /// Copy the permissions another class has now (`g=u`).
    Class(char),
}

impl Chmod {
    pub(crate) fn parse(text: &str) -> Result<Chmod, String> {
        let bad = || {
            format!(
                "--chmod={text}: use an octal mode such as 0755 or a symbolic one such as u=rwx,go=rx"
            )
        };
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(bad);
        }
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let mut chars = clause.chars().peekable();
            let mut who = 0;
            while let Some(c) = chars.next_if(|c| "ugoa".contains(*c)) {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    _ => 0o7777,
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut ops = Vec::new();
            while let Some(op) = chars.next_if(|c| "+-=".contains(*c)) {
                let perms = match chars.next_if(|c| "ugo".contains(*c)) {
                    Some(class) => SymbolicPerms::Class(class),
                    None => {
                        let (mut bits, mut conditional_x) = (0, false);
                        while let Some(p) = chars.next_if(|c| "rwxXst".contains(*c)) {
                            match p {
                                'r' => bits |= 0o444,
                                'w' => bits |= 0o222,
                                'x' => bits |= 0o111,
                                'X' => conditional_x = true,
                                's' => bits |= 0o6000,
                                _ => bits |= 0o1000,
                            }
                        }
                        SymbolicPerms::Bits {
                            bits,
                            conditional_x,
                        }
                    }
                };
                ops.push((op, perms));
            }
            if ops.is_empty() || chars.next().is_some() {
                return Err(bad());
            }
            clauses.push(SymbolicClause { who, ops });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode an entry with `mode` gets (no umask, so the result is reproducible).
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(clauses) => clauses,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for (op, perms) in &clause.ops {
                let bits = match perms {
                    SymbolicPerms::Bits {
                        bits,
                        conditional_x,
                    } => {
                        let x = *conditional_x && (is_dir || mode & 0o111 != 0);
                        bits | if x { 0o111 } else { 0 }
                    }
                    SymbolicPerms::Class(c) => {
                        let shift = match c {
                            'u' => 6,
                            'g' => 3,
                            _ => 0,
                        };
                        ((mode >> shift) & 0o7) * 0o111
                    }
                };
                let affected = bits & clause.who;
                mode = match op {
                    '+' => mode | affected,
                    '-' => mode & !affected,
                    _ => {
                        // As chmod(1): `=` keeps a directory's set-id bits it does not name.
                        let cleared = if is_dir {
                            clause.who & !0o6000
                        } else {
                            clause.who
                        };
                        (mode & !cleared) | affected
                    }
                };
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_octal_and_symbolic_as_chmod_1_does() {
        let apply = |spec: &str, mode: u32, dir: bool| Chmod::parse(spec).unwrap().apply(mode, dir);
        assert_eq!(apply("0755", 0o600, false), 0o755);
        assert_eq!(apply("4755", 0o600, false), 0o4755);
        assert_eq!(apply("+x", 0o644, false), 0o755);
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("go-w", 0o666, false), 0o644);
        assert_eq!(apply("a=r", 0o777, false), 0o444);
        assert_eq!(apply("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(apply("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(apply("u=rwX,go=rX", 0o700, true), 0o755);
        assert_eq!(apply("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(apply("g=u", 0o740, false), 0o770);
        assert_eq!(apply("o=", 0o777, false), 0o770);
        assert_eq!(apply("u+s,+t", 0o755, false), 0o5755);
        assert_eq!(apply("g+s", 0o755, true), 0o2755);
        // `=` keeps a directory's set-id bits, not a file's.
        assert_eq!(apply("u=rwx", 0o4755, false), 0o755);
        assert_eq!(apply("u=rwx", 0o2755, true), 0o2755);
        assert_eq!(apply("u+w-x", 0o555, false), 0o755 & !0o100);
        for bad in ["", "x", "u", "u+q", "0999", "77777", "u+x,", "+x y"] {
            let err = Chmod::parse(bad).unwrap_err();
            assert!(err.contains("--chmod="), "{bad}: {err}");
        }
    }
}
