//! `--format` templates as Docker takes them: the part of Go's text/template that format
//! strings use (`{{.Field.Sub}}`, pipelines, `if`/`else`/`range`/`with`, `json`, `join`,
//! `index`, `printf`, ...), evaluated over the JSON object a command would print. Values print
//! as Go's `%v` does (`[a b]`, `map[k:v]`), so scripts written for Docker read the same text.

use serde_json::Value;
use std::fmt::Write as _;

/// A parsed format template.
#[derive(Debug)]
pub struct Template {
    text: String,
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

type Pipeline = Vec<Command>;

#[derive(Debug, Clone)]
struct Command(Vec<Operand>);

#[derive(Debug, Clone)]
enum Operand {
    /// `.A.B` (empty for `.`), from dot, or from the root with `$`.
    Field {
        from_root: bool,
        path: Vec<String>,
    },
    Literal(Value),
    Function(String),
    Nested(Pipeline, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(Vec<String>),
    RootField(Vec<String>),
    Str(String),
    Number(Value),
    Ident(String),
    Pipe,
    Open,
    Close,
}

impl Template {
    pub fn parse(text: &str) -> anyhow::Result<Template> {
        // Docker's format strings take `\t` and `\n` typed in the shell as tab and newline.
        let text = &text.replace("\\t", "\t").replace("\\n", "\n");
        let fail = |message: String| anyhow::anyhow!("bad --format template {text:?}: {message}");
        let items = split_actions(text).map_err(fail)?;
        let mut items = items.into_iter().peekable();
        let (nodes, end) = parse_list(&mut items).map_err(fail)?;
        if let Some(end) = end {
            return Err(fail(format!("unexpected {{{{{end}}}}}")));
        }
        Ok(Template {
            text: text.to_string(),
            nodes,
        })
    }

    /// The text for `data` (Docker's templates see the object as `.`).
    pub fn render(&self, data: &Value) -> anyhow::Result<String> {
        let mut out = String::new();
        let scope = Scope { root: data };
        scope
            .run(&self.nodes, data, &mut out)
            .map_err(|message| anyhow::anyhow!("--format template {:?}: {message}", self.text))?;
        Ok(out)
    }
}

enum Item {
    Text(String),
    Action(String),
}

/// Text and `{{...}}` actions, with `{{-` / `-}}` trimming the whitespace beside them and
/// comments dropped.
fn split_actions(text: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut before = &rest[..start];
        if trim_next {
            before = before.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_before = after.starts_with("- ") || after.starts_with("-\t") || after == "-";
        if trim_before {
            before = before.trim_end();
        }
        if !before.is_empty() {
            items.push(Item::Text(before.to_string()));
        }
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed action: no }}".to_string())?;
        let mut inner = &after[..end];
        if trim_before {
            inner = &inner[1..];
        }
        trim_next = inner.ends_with(" -") || inner.ends_with("\t-");
        if trim_next {
            inner = &inner[..inner.len() - 1];
        }
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            items.push(Item::Action(inner.to_string()));
        }
        rest = &after[end + 2..];
    }
    let tail = if trim_next { rest.trim_start() } else { rest };
    if !tail.is_empty() {
        items.push(Item::Text(tail.to_string()));
    }
    Ok(items)
}

/// Nodes up to an `{{end}}` or `{{else...}}`, which is returned (without braces).
fn parse_list(
    items: &mut std::iter::Peekable<std::vec::IntoIter<Item>>,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(item) = items.next() {
        let action = match item {
            Item::Text(t) => {
                nodes.push(Node::Text(t));
                continue;
            }
            Item::Action(a) => a,
        };
        let (word, rest) = match action.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (action.as_str(), ""),
        };
        match word {
            "end" | "else" => return Ok((nodes, Some(action.clone()))),
            "if" | "range" | "with" => {
                let pipeline = parse_pipeline(rest)?;
                nodes.push(parse_block(word, pipeline, items)?);
            }
            _ => nodes.push(Node::Action(parse_pipeline(&action)?)),
        }
    }
    Ok((nodes, None))
}

/// The body of `if`/`range`/`with` up to its `{{end}}`, with an `{{else}}` or
/// `{{else if ...}}` part.
fn parse_block(
    word: &str,
    pipeline: Pipeline,
    items: &mut std::iter::Peekable<std::vec::IntoIter<Item>>,
) -> Result<Node, String> {
    let (body, end) = parse_list(items)?;
    let end = end.ok_or_else(|| format!("{{{{{word}}}}} without {{{{end}}}}"))?;
    let otherwise = if end == "end" {
        Vec::new()
    } else if let Some(cond) = end.strip_prefix("else if ") {
        // `{{else if X}}...{{end}}` is an `if` nested in the else part, sharing the end.
        vec![parse_block("if", parse_pipeline(cond.trim())?, items)?]
    } else if end == "else" {
        let (otherwise, end) = parse_list(items)?;
        if end.as_deref() != Some("end") {
            return Err(format!(
                "{{{{{word}}}}} ... {{{{else}}}} without {{{{end}}}}"
            ));
        }
        otherwise
    } else {
        return Err(format!("unexpected {{{{{end}}}}}"));
    };
    Ok(match word {
        "if" => Node::If(pipeline, body, otherwise),
        "range" => Node::Range(pipeline, body, otherwise),
        _ => Node::With(pipeline, body, otherwise),
    })
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut tokens = Vec::new();
    let word_end = |mut j: usize| {
        while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '.')
        {
            j += 1;
        }
        j
    };
    let fields = |s: &str| -> Vec<String> {
        s.split('.')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '.' => {
                let j = word_end(i + 1);
                tokens.push(Token::Field(fields(
                    &chars[i..j].iter().collect::<String>(),
                )));
                i = j;
            }
            '$' => {
                let j = word_end(i + 1);
                tokens.push(Token::RootField(fields(
                    &chars[i + 1..j].iter().collect::<String>(),
                )));
                i = j;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match chars.get(i) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(other) => s.push(*other),
                                None => return Err("unterminated string".into()),
                            }
                        }
                        Some(other) => s.push(*other),
                    }
                    i += 1;
                }
                tokens.push(Token::Str(s));
                i += 1;
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|c| *c == '`')
                    .ok_or("unterminated raw string")?;
                tokens.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                let number = text
                    .parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| text.parse::<f64>().map(Value::from))
                    .map_err(|_| format!("bad number {text}"))?;
                tokens.push(Token::Number(number));
                i = j;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                tokens.push(Token::Ident(chars[i..j].iter().collect()));
                i = j;
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(tokens)
}

fn parse_pipeline(text: &str) -> Result<Pipeline, String> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let pipeline = pipeline_at(&tokens, &mut pos)?;
    if pos != tokens.len() {
        return Err(format!("unexpected {:?} in {text:?}", tokens[pos]));
    }
    if pipeline.is_empty() {
        return Err("empty action".into());
    }
    Ok(pipeline)
}

fn pipeline_at(tokens: &[Token], pos: &mut usize) -> Result<Pipeline, String> {
    let mut commands = Vec::new();
    let mut operands = Vec::new();
    while let Some(token) = tokens.get(*pos) {
        *pos += 1;
        let operand = match token {
            Token::Close => {
                *pos -= 1;
                break;
            }
            Token::Pipe => {
                if operands.is_empty() {
                    return Err("missing command before |".into());
                }
                commands.push(Command(std::mem::take(&mut operands)));
                continue;
            }
            Token::Field(path) => Operand::Field {
                from_root: false,
                path: path.clone(),
            },
            Token::RootField(path) => Operand::Field {
                from_root: true,
                path: path.clone(),
            },
            Token::Str(s) => Operand::Literal(Value::String(s.clone())),
            Token::Number(n) => Operand::Literal(n.clone()),
            Token::Ident(name) => match name.as_str() {
                "true" => Operand::Literal(Value::Bool(true)),
                "false" => Operand::Literal(Value::Bool(false)),
                "nil" => Operand::Literal(Value::Null),
                _ => Operand::Function(name.clone()),
            },
            Token::Open => {
                let inner = pipeline_at(tokens, pos)?;
                if tokens.get(*pos) != Some(&Token::Close) {
                    return Err("unclosed (".into());
                }
                *pos += 1;
                // `(pipeline).Field`
                let mut path = Vec::new();
                if let Some(Token::Field(more)) = tokens.get(*pos) {
                    path = more.clone();
                    *pos += 1;
                }
                Operand::Nested(inner, path)
            }
        };
        operands.push(operand);
    }
    if !operands.is_empty() {
        commands.push(Command(operands));
    } else if !commands.is_empty() {
        return Err("missing command after |".into());
    }
    Ok(commands)
}

struct Scope<'a> {
    root: &'a Value,
}

impl Scope<'_> {
    fn run(&self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), String> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => out.push_str(&go_print(&self.pipeline(p, dot)?)),
                Node::If(p, body, otherwise) => {
                    let branch = if truthy(&self.pipeline(p, dot)?) {
                        body
                    } else {
                        otherwise
                    };
                    self.run(branch, dot, out)?;
                }
                Node::With(p, body, otherwise) => {
                    let value = self.pipeline(p, dot)?;
                    if truthy(&value) {
                        self.run(body, &value, out)?;
                    } else {
                        self.run(otherwise, dot, out)?;
                    }
                }
                Node::Range(p, body, otherwise) => {
                    let items: Vec<Value> = match self.pipeline(p, dot)? {
                        Value::Array(a) => a,
                        // Maps range over their values in key order, as Go's.
                        Value::Object(o) => {
                            let mut pairs: Vec<_> = o.into_iter().collect();
                            pairs.sort_by(|a, b| a.0.cmp(&b.0));
                            pairs.into_iter().map(|(_, v)| v).collect()
                        }
                        Value::Null => Vec::new(),
                        other => {
                            return Err(format!("range can't iterate over {}", go_print(&other)))
                        }
                    };
                    if items.is_empty() {
                        self.run(otherwise, dot, out)?;
                    }
                    for item in &items {
                        self.run(body, item, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn pipeline(&self, pipeline: &Pipeline, dot: &Value) -> Result<Value, String> {
        let mut previous: Option<Value> = None;
        for command in pipeline {
            previous = Some(self.command(command, dot, previous)?);
        }
        Ok(previous.unwrap_or(Value::Null))
    }

    fn command(
        &self,
        command: &Command,
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, String> {
        let (first, rest) = command.0.split_first().ok_or("empty command")?;
        if let Operand::Function(name) = first {
            let mut args = rest
                .iter()
                .map(|o| self.operand(o, dot))
                .collect::<Result<Vec<_>, _>>()?;
            args.extend(piped);
            return call(name, &args);
        }
        if !rest.is_empty() || piped.is_some() {
            return Err("only a function takes arguments".into());
        }
        self.operand(first, dot)
    }

    fn operand(&self, operand: &Operand, dot: &Value) -> Result<Value, String> {
        match operand {
            Operand::Field { from_root, path } => {
                Ok(walk(if *from_root { self.root } else { dot }, path))
            }
            Operand::Literal(v) => Ok(v.clone()),
            Operand::Function(name) => call(name, &[]),
            Operand::Nested(p, path) => Ok(walk(&self.pipeline(p, dot)?, path)),
        }
    }
}

/// `.A.B`: a missing key is null (printed `<no value>`, as Go prints a map's missing entry).
fn walk(from: &Value, path: &[String]) -> Value {
    let mut current = from;
    for key in path {
        match current.get(key) {
            Some(next) => current = next,
            None => return Value::Null,
        }
    }
    current.clone()
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A value as Go's `%v` prints it.
fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(go_print).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(o) => {
            let mut pairs: Vec<_> = o.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn text_arg(args: &[Value], i: usize, name: &str) -> Result<String, String> {
    args.get(i)
        .map(go_print)
        .ok_or_else(|| format!("{name}: missing argument"))
}

/// Go's builtins and Docker's template functions.
fn call(name: &str, args: &[Value]) -> Result<Value, String> {
    let want = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("{name} wants {n} argument(s), got {}", args.len()))
        }
    };
    Ok(match name {
        "json" => {
            want(1)?;
            Value::String(serde_json::to_string(&args[0]).map_err(|e| e.to_string())?)
        }
        "join" => {
            want(2)?;
            let sep = text_arg(args, 1, name)?;
            match &args[0] {
                Value::Array(a) => {
                    Value::String(a.iter().map(go_print).collect::<Vec<_>>().join(&sep))
                }
                other => Value::String(go_print(other)),
            }
        }
        "split" => {
            want(2)?;
            let text = text_arg(args, 0, name)?;
            let sep = text_arg(args, 1, name)?;
            Value::Array(
                text.split(sep.as_str())
                    .map(|s| Value::String(s.into()))
                    .collect(),
            )
        }
        "upper" => Value::String(text_arg(args, 0, name)?.to_uppercase()),
        "lower" => Value::String(text_arg(args, 0, name)?.to_lowercase()),
        "title" => {
            let text = text_arg(args, 0, name)?;
            let mut out = String::new();
            let mut start = true;
            for c in text.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = c.is_whitespace();
            }
            Value::String(out)
        }
        "truncate" => {
            want(2)?;
            let text = text_arg(args, 0, name)?;
            let n = args[1]
                .as_u64()
                .ok_or("truncate: the length must be a number")? as usize;
            Value::String(text.chars().take(n).collect())
        }
        "pad" => {
            want(3)?;
            let text = text_arg(args, 0, name)?;
            let before = args[1].as_u64().unwrap_or(0) as usize;
            let after = args[2].as_u64().unwrap_or(0) as usize;
            Value::String(format!("{}{text}{}", " ".repeat(before), " ".repeat(after)))
        }
        "len" => {
            want(1)?;
            Value::from(match &args[0] {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.len(),
                Value::Null => 0,
                other => return Err(format!("len of {}", go_print(other))),
            })
        }
        "index" => {
            let (first, keys) = args.split_first().ok_or("index: missing argument")?;
            let mut current = first.clone();
            for key in keys {
                current = match (&current, key) {
                    (Value::Array(a), k) => k
                        .as_u64()
                        .and_then(|i| a.get(i as usize).cloned())
                        .ok_or_else(|| format!("index {} out of range", go_print(k)))?,
                    (Value::Object(o), k) => o.get(&go_print(k)).cloned().unwrap_or(Value::Null),
                    (Value::Null, _) => Value::Null,
                    (other, _) => return Err(format!("can't index {}", go_print(other))),
                };
            }
            current
        }
        "not" => {
            want(1)?;
            Value::Bool(!truthy(&args[0]))
        }
        "and" => args
            .iter()
            .find(|a| !truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => args
            .iter()
            .find(|a| truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "eq" => {
            let (first, rest) = args.split_first().ok_or("eq: missing argument")?;
            Value::Bool(rest.iter().any(|r| same(first, r)))
        }
        "ne" => {
            want(2)?;
            Value::Bool(!same(&args[0], &args[1]))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let order = compare(&args[0], &args[1])
                .ok_or_else(|| format!("{name}: incomparable values"))?;
            Value::Bool(match name {
                "lt" => order.is_lt(),
                "le" => order.is_le(),
                "gt" => order.is_gt(),
                _ => order.is_ge(),
            })
        }
        "print" => Value::String(args.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        "println" => Value::String(format!(
            "{}\n",
            args.iter().map(go_print).collect::<Vec<_>>().join(" ")
        )),
        "printf" => {
            let (format, rest) = args.split_first().ok_or("printf: missing format")?;
            Value::String(printf(&go_print(format), rest)?)
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Go's printf for the verbs format strings use: %s %v %d %q %t %%, with a width.
fn printf(format: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit() || **d == '-') {
            width.push(*d);
            chars.next();
        }
        let verb = chars.next().ok_or("printf: format ends in %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args.next().cloned().unwrap_or(Value::Null);
        let text = match verb {
            's' | 'v' | 'd' | 't' => go_print(&arg),
            'q' => serde_json::to_string(&go_print(&arg)).map_err(|e| e.to_string())?,
            other => return Err(format!("printf: verb %{other} is not supported")),
        };
        let width: i64 = width.parse().unwrap_or(0);
        let pad = (width.unsigned_abs() as usize).saturating_sub(text.chars().count());
        if width < 0 {
            let _ = write!(out, "{text}{}", " ".repeat(pad));
        } else {
            let _ = write!(out, "{}{text}", " ".repeat(pad));
        }
    }
    Ok(out)
}

/// `--format`: `table`, `json`, `table TEMPLATE` or a TEMPLATE, as Docker's list commands.
pub enum ListFormat {
    /// The command's own table; with a template, its columns (tab-separated cells).
    Table(Option<Template>),
    Json,
    Lines(Template),
}

impl ListFormat {
    pub fn parse(text: &str) -> anyhow::Result<ListFormat> {
        Ok(match text.trim() {
            "" | "table" => ListFormat::Table(None),
            "json" | "{{json .}}" => ListFormat::Json,
            t => match t.strip_prefix("table ") {
                Some(columns) => ListFormat::Table(Some(Template::parse(columns)?)),
                None => ListFormat::Lines(Template::parse(text)?),
            },
        })
    }

    /// Prints `rows` (each the object a template sees) in this format. `header` names the
    /// column a field shows in a `table` template (e.g. `.Names` -> `NAMES`).
    pub fn print(&self, rows: &[Value], header: impl Fn(&str) -> String) -> anyhow::Result<()> {
        match self {
            ListFormat::Table(None) => {}
            ListFormat::Json => {
                for row in rows {
                    println!("{row}");
                }
            }
            ListFormat::Lines(template) => {
                for row in rows {
                    println!("{}", template.render(row)?);
                }
            }
            ListFormat::Table(Some(template)) => {
                let headers: Vec<String> = template_columns(&template.text)
                    .iter()
                    .map(|field| header(field))
                    .collect();
                let mut lines = vec![headers];
                for row in rows {
                    let text = template.render(row)?;
                    lines.push(text.split('\t').map(str::to_string).collect());
                }
                print!("{}", aligned(&lines));
            }
        }
        Ok(())
    }
}

/// The header of each tab-separated column of a `table` template: the field its first
/// action shows (`{{.Names}}` -> "Names"), else the column's own text.
fn template_columns(text: &str) -> Vec<String> {
    text.split('\t')
        .map(|column| {
            column
                .split("{{")
                .nth(1)
                .and_then(|action| action.split("}}").next())
                .and_then(|action| {
                    action
                        .split_whitespace()
                        .find(|w| w.starts_with('.') && w.len() > 1)
                        .map(|w| w.trim_start_matches('.').to_string())
                })
                .unwrap_or_else(|| column.trim().to_string())
        })
        .collect()
}

/// Columns padded to their widest cell, three spaces apart (Docker's tabwriter layout).
fn aligned(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .filter_map(|l| l.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 < line.len() {
                let _ = write!(text, "{cell:<width$}   ", width = widths[i]);
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
