//! Command lines and environment settings through clap, with the environment read from a
//! function instead of the process, so tests pass their own and the binaries pass
//! `std::env::var`. Blank variables count as unset (a `KEY=` line in an env file).

use std::ffi::OsString;

use clap::{Command, Parser};

/// Parse `args` (the program name first) as `T`, each argument's environment variable read
/// through `env`; flags win over variables, variables over defaults.
pub fn parse_with_env<T, I, A>(
    env: impl Fn(&str) -> Option<String>,
    args: I,
) -> Result<T, clap::Error>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let cmd = with_env(T::command(), &env);
    let mut matches = cmd.try_get_matches_from(args)?;
    T::from_arg_matches_mut(&mut matches)
}

/// `T` parsed from the process' own arguments and environment; on a bad value, clap's
/// message and exit code (2).
pub fn parse_process<T: Parser>() -> T {
    parse_with_env(|k| std::env::var(k).ok(), std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Replace each argument's captured process variable with `env`'s value, given as its
/// default (so a flag still wins); the variable's name stays in the help.
fn with_env(cmd: Command, env: &dyn Fn(&str) -> Option<String>) -> Command {
    let cmd = cmd.mut_args(|a| {
        let Some(name) = a.get_env().and_then(|n| n.to_str()).map(str::to_string) else {
            return a;
        };
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let a = a
            .env(None::<&'static str>)
            .help(format!("{help} [env: {name}]"));
        match env(&name).filter(|v| !v.trim().is_empty()) {
            Some(v) => a.default_value(v),
            None => a,
        }
    });
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    subcommands.into_iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |sub| with_env(sub, env))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Demo {
        #[arg(long, env = "DEMO_PORT", default_value_t = 8080)]
        port: u16,
        #[arg(long, env = "DEMO_URL")]
        url: Option<String>,
    }

    #[test]
    fn flags_then_variables_then_defaults() {
        let env = |k: &str| match k {
            "DEMO_PORT" => Some("9000".to_string()),
            "DEMO_URL" => Some("   ".to_string()),
            _ => None,
        };
        let d: Demo = parse_with_env(env, ["demo"]).unwrap();
        assert_eq!((d.port, d.url), (9000, None), "blank counts as unset");
        let d: Demo = parse_with_env(env, ["demo", "--port", "1"]).unwrap();
        assert_eq!(d.port, 1);
        let d: Demo = parse_with_env(|_| None, ["demo"]).unwrap();
        assert_eq!(d.port, 8080);
        // A bad value is an error naming it, never a silent default.
        let bad = |k: &str| (k == "DEMO_PORT").then(|| "lots".to_string());
        let e = parse_with_env::<Demo, _, _>(bad, ["demo"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lots"), "{e}");
        assert!(parse_with_env::<Demo, _, _>(|_| None, ["demo", "--port", "abc"]).is_err());
    }
}
