//! Every exchange the suite made, checked against the served OpenAPI document.

use crate::prelude::*;

// ------------------------------------------------------------------------- OpenAPI check

/// Every recorded exchange must be a documented operation answering a documented status
/// with a body that matches its schema; every documented operation must have been called.
pub fn check_openapi(spec: &Value, log: &[Exchange]) {
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1"
    );
    let paths = spec["paths"].as_object().unwrap();
    let mut exercised: HashMap<(String, String), usize> = HashMap::new();
    for e in log {
        if e.path == "/api/v1/openapi.json" {
            continue;
        }
        let Some((template, ops)) = paths.iter().find(|(tpl, _)| path_matches(tpl, &e.path)) else {
            assert_eq!(e.status, 404, "undocumented path answered: {e:?}");
            continue;
        };
        let op = &ops[&e.method];
        assert!(op.is_object(), "{} {template} is not documented", e.method);
        *exercised
            .entry((e.method.clone(), template.clone()))
            .or_default() += 1;
        let resp = &op["responses"][e.status.to_string()];
        assert!(
            resp.is_object(),
            "{} {template} answered {} which is not documented: {:?}",
            e.method,
            e.status,
            e.json
        );
        if let (Some(body), Some(schema)) = (
            &e.json,
            resp["content"]["application/json"]["schema"].as_object(),
        ) {
            if let Err(why) = validate(spec, &Value::Object(schema.clone()), body, "$") {
                panic!(
                    "{} {template} {}: body does not match its schema: {why}\n{body:#}",
                    e.method, e.status
                );
            }
        }
    }
    for (tpl, ops) in paths {
        for m in ops.as_object().unwrap().keys() {
            assert!(
                exercised.contains_key(&(m.clone(), tpl.clone())),
                "documented {m} {tpl} was never exercised"
            );
        }
    }
}

pub fn path_matches(template: &str, path: &str) -> bool {
    let (a, b): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    a.len() == b.len() && a.iter().zip(&b).all(|(t, p)| t.starts_with('{') || t == p)
}

pub fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            resolve(spec, &spec["components"]["schemas"][name])
        }
        None => schema,
    }
}

pub fn validate(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = resolve(spec, schema);
    if let Some(all) = s["allOf"].as_array() {
        for sub in all {
            validate(spec, sub, v, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(any) = s[key].as_array() {
            if !any.iter().any(|sub| validate(spec, sub, v, at).is_ok()) {
                return Err(format!("{at}: matches none of {key}"));
            }
        }
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(|t| t.as_str()).collect(),
        _ => vec![],
    };
    let nullable = s["nullable"].as_bool().unwrap_or(false);
    if v.is_null() {
        return if types.is_empty() || types.contains(&"null") || nullable {
            Ok(())
        } else {
            Err(format!("{at}: null where {types:?} is expected"))
        };
    }
    if !types.is_empty() {
        let ok = types.iter().any(|t| match *t {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {v} is not {types:?}"));
        }
    }
    if let (Some(obj), Some(props)) = (v.as_object(), s["properties"].as_object()) {
        for req in s["required"].as_array().into_iter().flatten() {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                return Err(format!("{at}: required property {req:?} is missing"));
            }
        }
        for (k, sub) in props {
            if let Some(x) = obj.get(k) {
                validate(spec, sub, x, &format!("{at}.{k}"))?;
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(spec, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}
