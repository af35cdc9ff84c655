//! Tests of the Go-template subset and the list formats.

use super::*;
use serde_json::json;

fn render(template: &str, data: &Value) -> String {
    Template::parse(template).unwrap().render(data).unwrap()
}

#[test]
fn fields_print_as_go_prints_them() {
    let data = json!({
        "State": {"Running": true, "Pid": 42, "Status": "running"},
        "Config": {"Env": ["A=1", "B=2"], "Labels": {"x": "y", "a": "b"}, "Cmd": null},
        "Name": "/web",
    });
    assert_eq!(render("{{.State.Running}}", &data), "true");
    assert_eq!(render("{{ .State.Pid }}", &data), "42");
    assert_eq!(render("{{.Config.Env}}", &data), "[A=1 B=2]");
    assert_eq!(render("{{.Config.Labels}}", &data), "map[a:b x:y]");
    assert_eq!(render("{{.Config.Cmd}}", &data), "<no value>");
    assert_eq!(render("{{.Missing.Deeper}}", &data), "<no value>");
    assert_eq!(render("{{.}}", &json!("plain")), "plain");
    assert_eq!(render("{{$.Name}}", &data), "/web");
}

#[test]
fn functions_and_pipelines() {
    let data = json!({"Env": ["A=1", "B=2"], "Labels": {"com.x": "y"}, "Name": "web", "N": 3});
    assert_eq!(render("{{json .Labels}}", &data), r#"{"com.x":"y"}"#);
    assert_eq!(render("{{join .Env \",\"}}", &data), "A=1,B=2");
    assert_eq!(render("{{index .Labels \"com.x\"}}", &data), "y");
    assert_eq!(render("{{index .Env 1}}", &data), "B=2");
    assert_eq!(render("{{len .Env}}", &data), "2");
    assert_eq!(render("{{.Name | upper}}", &data), "WEB");
    assert_eq!(render("{{upper .Name | lower}}", &data), "web");
    assert_eq!(render("{{printf \"%s=%d\" .Name .N}}", &data), "web=3");
    assert_eq!(render("{{printf \"%-5s|\" .Name}}", &data), "web  |");
    assert_eq!(render("{{printf \"%q\" .Name}}", &data), "\"web\"");
    assert_eq!(render("{{(index .Env 0)}}", &data), "A=1");
    assert_eq!(render("{{split \"a:b\" \":\"}}", &data), "[a b]");
    assert_eq!(render("{{title \"hello world\"}}", &data), "Hello World");
    assert_eq!(
        render("{{eq .N 3}} {{ne .Name \"web\"}} {{gt .N 2}}", &data),
        "true false true"
    );
}

#[test]
fn control_structures() {
    let data = json!({"Up": true, "Env": ["A=1", "B=2"], "Empty": [], "Mounts": [{"Source": "/s", "Destination": "/d"}]});
    assert_eq!(render("{{if .Up}}up{{else}}down{{end}}", &data), "up");
    assert_eq!(
        render(
            "{{if not .Up}}up{{else if .Env}}env{{else}}no{{end}}",
            &data
        ),
        "env"
    );
    assert_eq!(render("{{range .Env}}<{{.}}>{{end}}", &data), "<A=1><B=2>");
    assert_eq!(
        render("{{range .Empty}}x{{else}}none{{end}}", &data),
        "none"
    );
    assert_eq!(
        render(
            "{{range .Mounts}}{{.Source}}:{{.Destination}}{{end}}",
            &data
        ),
        "/s:/d"
    );
    assert_eq!(render("{{with .Env}}{{len .}}{{end}}", &data), "2");
    assert_eq!(render("a {{- /* note */ -}} b", &data), "ab");
    assert_eq!(
        render("{{range .Env -}}\n  {{.}}\n{{- end}}", &data),
        "A=1B=2"
    );
}

#[test]
fn bad_templates_are_errors_not_panics() {
    for bad in [
        "{{.A",
        "{{if .A}}x",
        "{{end}}",
        "{{else}}",
        "{{nosuch .A}}",
        "{{\"open}}",
        "{{(.A}}",
        "{{|}}",
        "{{}}",
        "{{range .A}}{{else}}",
    ] {
        let result = Template::parse(bad).and_then(|t| t.render(&json!({"A": 1})));
        assert!(result.is_err(), "{bad} was accepted");
    }
    let t = Template::parse("{{range .A}}{{end}}").unwrap();
    assert!(t.render(&json!({"A": 5})).is_err());
}

#[test]
fn table_headers_come_from_the_fields() {
    assert_eq!(
        template_columns("{{.Names}}\t{{.Status}}\tsize: {{.Size}}"),
        ["Names", "Status", "Size"]
    );
}
