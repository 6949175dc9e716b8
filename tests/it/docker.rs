//! docker/: the image and the compose file, checked without a Docker engine (the test machines
//! have none, so the image itself is not built here). The compose file runs the services the
//! README promises, with the settings db-sync needs; every file the compose file and the
//! Dockerfile take from the repository exists (and passes the build-context filter); and
//! docker/config.yaml is a valid db-sync configuration that points at the compose services.
//! Files are only read: no network, no processes.

use std::path::{Path, PathBuf};

use db_sync::audit::AuditStore;
use db_sync::config::{interpolate, Config};
use serde_json::Value;

use crate::support::root;

fn docker_dir() -> PathBuf {
    root().join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn compose() -> Value {
    let path = docker_dir().join("compose.yaml");
    serde_saphyr::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("docker/compose.yaml has no service {name}"))
}

/// A scalar as text (compose takes numbers and booleans where it means strings).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("expected a scalar in docker/compose.yaml, got {other:?}"),
    }
}

/// A required scalar field of a mapping.
fn field(v: &Value, key: &str) -> String {
    text(
        v.get(key)
            .unwrap_or_else(|| panic!("docker/compose.yaml: `{key}` missing in {v:?}")),
    )
}

/// `command:` in either form (one string, or a list of words), as one string.
fn words(v: Option<&Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::Array(items)) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        Some(other) => text(other),
    }
}

/// A service's `environment:` as (name, value) pairs, from the map or the `NAME=VALUE` list form.
fn environment(service: &Value) -> Vec<(String, String)> {
    match service.get("environment") {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|kv| {
                let kv = text(kv);
                match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn env_var(service: &Value, name: &str) -> Option<String> {
    environment(service)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The services a service waits for (`depends_on:` as a map or a list).
fn depends_on(service: &Value) -> Vec<String> {
    match service.get("depends_on") {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(Value::Array(items)) => items.iter().map(text).collect(),
        _ => Vec::new(),
    }
}

/// One `volumes:` entry of a service: a bind mount (its source relative to docker/) or a
/// named volume (an anonymous one has an empty source).
struct Mount {
    bind: bool,
    source: String,
    target: String,
}

fn mounts(service: &Value) -> Vec<Mount> {
    let Some(Value::Array(items)) = service.get("volumes") else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            if item.is_object() {
                return Mount {
                    bind: item.get("type").map(text).as_deref() == Some("bind"),
                    source: item.get("source").map(text).unwrap_or_default(),
                    target: field(item, "target"),
                };
            }
            let short = text(item);
            match short.split_once(':') {
                Some((source, rest)) => Mount {
                    bind: source.starts_with(['.', '/', '~']),
                    source: source.to_string(),
                    target: rest.split(':').next().unwrap_or_default().to_string(),
                },
                None => Mount {
                    bind: false,
                    source: String::new(),
                    target: short,
                },
            }
        })
        .collect()
}

/// Dockerfile instructions as (KEYWORD, arguments): comments and blank lines dropped,
/// continued lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&docker_dir().join("Dockerfile"));
    let mut steps = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((current.as_str(), ""));
        steps.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    assert!(
        current.is_empty(),
        "docker/Dockerfile ends inside a continued line"
    );
    steps
}

/// The instructions of the last (runtime) stage, from its FROM on.
fn runtime_stage() -> Vec<(String, String)> {
    let steps = dockerfile();
    let start = steps
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("docker/Dockerfile has a FROM");
    steps[start..].to_vec()
}

/// The runtime stage's working directory: where config/, jobs/ and data/ live in the image.
fn runtime_workdir() -> String {
    runtime_stage()
        .iter()
        .rev()
        .find(|(k, _)| k == "WORKDIR")
        .map(|(_, a)| a.trim_end_matches('/').to_string())
        .expect("the runtime stage of docker/Dockerfile sets WORKDIR")
}

/// The build-context paths a COPY/ADD takes; `None` for `--from=` (another stage's files).
fn context_sources(args: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = args.split_whitespace().collect();
    if words.iter().any(|w| w.starts_with("--from=")) {
        return None;
    }
    let paths: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
    assert!(
        paths.len() >= 2 && !paths[0].starts_with('['),
        "docker/Dockerfile: `COPY {args}`: write COPY SRC... DEST (the test reads that form)"
    );
    Some(
        paths[..paths.len() - 1]
            .iter()
            .map(|p| p.trim_start_matches("./").to_string())
            .collect(),
    )
}

/// Whether an allowlist-style ignore file (`*`, then `!path` lines) lets `src` into the build
/// context; any other ignore file is not checked.
fn allowed(ignore: &str, src: &str) -> bool {
    let src = src.trim_end_matches('/');
    let lines: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if !lines.contains(&"*") {
        return true;
    }
    lines
        .iter()
        .filter_map(|l| l.strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .any(|allow| src == allow || src.starts_with(&format!("{allow}/")))
}

/// The host of `scheme://[user:pass@]host[:port][/...]`.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split([':', '/'])
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn compose_runs_postgres_mysql_minio_and_the_app() {
    let c = compose();
    let services = c
        .get("services")
        .and_then(Value::as_object)
        .expect("docker/compose.yaml has services:");
    for name in ["postgres", "mysql", "minio", "app"] {
        service(&c, name);
    }
    for (name, svc) in services.iter() {
        for dep in depends_on(svc) {
            assert!(
                services.get(dep.as_str()).is_some(),
                "service {} depends on {dep}, which compose.yaml does not define",
                name
            );
        }
    }

    let pg = service(&c, "postgres");
    assert!(field(pg, "image").starts_with("postgres:"), "{pg:?}");
    let command = words(pg.get("command"));
    assert!(
        command.contains("wal_level=logical"),
        "postgres must run with wal_level=logical for Debezium: {command}"
    );
    assert_eq!(env_var(pg, "POSTGRES_DB").as_deref(), Some("shop"));

    let mysql = service(&c, "mysql");
    assert!(field(mysql, "image").starts_with("mysql:8"), "{mysql:?}");
    let command = words(mysql.get("command"));
    assert!(
        command.contains("--local-infile=1"),
        "LOAD DATA LOCAL needs local_infile on: {command}"
    );
    assert_eq!(env_var(mysql, "MYSQL_DATABASE").as_deref(), Some("target"));
    assert_eq!(env_var(mysql, "MYSQL_USER").as_deref(), Some("sync"));

    let app = service(&c, "app");
    let build = app.get("build").expect("the app service has build:");
    assert_eq!(field(build, "dockerfile"), "docker/Dockerfile");
    let context = docker_dir().join(field(build, "context"));
    assert_eq!(
        context.canonicalize().unwrap(),
        root().canonicalize().unwrap(),
        "the build context is the repository root"
    );
    assert!(context.join("docker/Dockerfile").is_file());
    assert_eq!(
        words(app.get("command")),
        "run",
        "the app runs `db-sync run`"
    );
    let deps = depends_on(app);
    for needed in ["postgres", "mysql"] {
        assert!(
            deps.iter().any(|d| d == needed),
            "app waits for {needed}: {deps:?}"
        );
    }
    assert!(
        deps.iter().any(|d| d.starts_with("minio")),
        "app waits for minio (or its bucket): {deps:?}"
    );
}

#[test]
fn every_file_the_compose_file_mounts_exists() {
    let c = compose();
    let declared: Vec<String> = match c.get("volumes") {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let services = c
        .get("services")
        .and_then(Value::as_object)
        .expect("docker/compose.yaml has services:");
    // (service, canonical host path, container path) of each bind mount.
    let mut binds: Vec<(String, PathBuf, String)> = Vec::new();
    for (name, svc) in services.iter() {
        let name = name.clone();
        for m in mounts(svc) {
            if m.bind {
                assert!(
                    m.source.starts_with('.'),
                    "{name} mounts {}: mount files of the repository, relative to docker/",
                    m.source
                );
                let path = docker_dir().join(&m.source);
                assert!(
                    path.exists(),
                    "{name} mounts {} ({}), which does not exist",
                    m.source,
                    path.display()
                );
                binds.push((name.clone(), path.canonicalize().unwrap(), m.target));
            } else if !m.source.is_empty() {
                assert!(
                    declared.contains(&m.source),
                    "{name} uses volume {}, which is not declared under volumes:",
                    m.source
                );
            }
        }
    }

    // The sample schema is the very file the demo and the tests load, so the two cannot drift.
    let shop = root().join("scripts/sql/shop.sql").canonicalize().unwrap();
    assert!(
        binds.iter().any(|(s, p, t)| s == "postgres"
            && *p == shop
            && t.starts_with("/docker-entrypoint-initdb.d/")),
        "postgres loads scripts/sql/shop.sql at initialisation: {binds:?}"
    );
    // The app reads docker/config.yaml where the image's default --config points, so
    // `docker compose exec app db-sync status` reads it too; its data lives in a volume.
    let workdir = runtime_workdir();
    let config = docker_dir().join("config.yaml").canonicalize().unwrap();
    assert!(
        binds.iter().any(|(s, p, t)| s == "app"
            && *p == config
            && *t == format!("{workdir}/config/config.yaml")),
        "app mounts docker/config.yaml at {workdir}/config/config.yaml: {binds:?}"
    );
    assert!(
        mounts(service(&c, "app"))
            .iter()
            .any(|m| !m.bind && !m.source.is_empty() && m.target == format!("{workdir}/data")),
        "app keeps {workdir}/data (journal, offsets) in a named volume"
    );
}

#[test]
fn the_dockerfile_builds_with_setup_sh_and_copies_files_that_exist() {
    let steps = dockerfile();
    let froms: Vec<&String> = steps
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert!(
        froms.len() >= 2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(
        steps
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("scripts/setup.sh")),
        "the build stage runs the project's own scripts/setup.sh"
    );
    // Build only: setup.sh has the switch, and the Dockerfile sets it.
    assert!(read(&root().join("scripts/setup.sh")).contains("SETUP_SERVICES"));
    assert!(
        steps
            .iter()
            .any(|(k, a)| (k == "ENV" || k == "RUN") && a.contains("SETUP_SERVICES=0")),
        "the image build skips the test servers (SETUP_SERVICES=0)"
    );

    let ignore = std::fs::read_to_string(docker_dir().join("Dockerfile.dockerignore")).ok();
    let mut copied = 0;
    for (k, args) in &steps {
        if k != "COPY" && k != "ADD" {
            continue;
        }
        let Some(sources) = context_sources(args) else {
            continue;
        };
        for src in sources {
            let path = root().join(&src);
            assert!(
                path.exists(),
                "docker/Dockerfile `{k} {args}`: {src} does not exist in the repository"
            );
            if let Some(ignore) = &ignore {
                assert!(
                    allowed(ignore, &src),
                    "docker/Dockerfile copies {src}, but docker/Dockerfile.dockerignore leaves it out of the context"
                );
            }
            copied += 1;
        }
    }
    assert!(copied > 0, "the Dockerfile copies the repository's files");

    let runtime = runtime_stage();
    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, a)| a.clone())
        .expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap_or_default();
    assert!(
        name != "root" && name != "0",
        "db-sync runs as a non-root user, not {user}"
    );
    assert!(
        runtime
            .iter()
            .any(|(k, a)| k == "ENV" && a.contains("JAVA_HOME")),
        "the runtime stage sets JAVA_HOME, where db-sync finds libjvm.so"
    );
    assert!(
        runtime
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("openjdk-17-jre-headless")),
        "the runtime stage installs a JRE 17"
    );
}

#[test]
fn docker_config_is_valid_and_points_at_the_compose_services() {
    let path = docker_dir().join("config.yaml");
    let raw = read(&path);
    // What Config::load does after .env and reading the file, with no environment at all:
    // every ${VAR:-default} takes its default, whatever this machine has set.
    let config = Config::parse(&path, &raw, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let c = compose();
    let is_service = |host: &str| c.get("services").and_then(|s| s.get(host)).is_some();

    let pg_host = config.source_prop("database.hostname").unwrap_or_default();
    assert!(
        is_service(pg_host.as_str()),
        "source host {pg_host} is no compose service"
    );
    let target = config
        .target
        .as_ref()
        .expect("docker/config.yaml has a target");
    let mysql_host = url_host(target.url.expose());
    assert_eq!(mysql_host, "mysql", "the target is the mysql service");

    // Audit files on the minio service, in the bucket that minio-init creates.
    let bucket = config
        .audit
        .url
        .strip_prefix("s3://")
        .and_then(|r| r.split('/').next())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| panic!("audit.url {} is not s3://BUCKET/PREFIX", config.audit.url));
    let init = words(service(&c, "minio-init").get("command"));
    assert!(
        init.contains("mc mb") && init.contains(&format!("/{bucket}")),
        "minio-init creates bucket {bucket}: {init}"
    );
    let endpoint = config
        .audit
        .options
        .get("endpoint")
        .map(|v| v.as_string())
        .expect("audit.options.endpoint");
    let s3_host = url_host(&endpoint);
    assert!(
        is_service(s3_host.as_str()),
        "S3 endpoint host {s3_host} is no compose service"
    );
    // Every option is one the S3 client knows; building the client touches no network.
    if let Err(e) = AuditStore::open(&config.audit) {
        panic!("docker/config.yaml: {e}");
    }

    // Each variable compose gives the app is one docker/config.yaml reads (no typo), and with
    // those values (compose's own ${VAR:-default} taking its default) the config still holds.
    let app = service(&c, "app");
    let env: Vec<(String, String)> = environment(app)
        .into_iter()
        .map(|(k, v)| {
            let v = interpolate(&v, &|_| None).unwrap_or(v);
            (k, v)
        })
        .collect();
    assert!(!env.is_empty(), "compose passes the app its settings");
    for (name, _) in &env {
        assert!(
            raw.contains(&format!("${{{name}")),
            "compose sets {name} for the app, but docker/config.yaml does not read it"
        );
    }
    let with_env = Config::parse(&path, &raw, &|name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("with the app's environment from compose.yaml: {e}"));
    let target = with_env.target.as_ref().expect("a target");
    assert_eq!(url_host(target.url.expose()), "mysql");
    let pg_host = with_env
        .source_prop("database.hostname")
        .unwrap_or_default();
    assert!(is_service(pg_host.as_str()), "source host {pg_host}");
}

/// The target URL `config/config.yaml` gives under `env`.
fn target_url(env: &dyn Fn(&str) -> Option<String>) -> String {
    let path = root().join("config/config.yaml");
    let config = Config::parse(&path, &read(&path), env).unwrap_or_else(|e| panic!("{e}"));
    config
        .target
        .expect("config/config.yaml has a target")
        .url
        .expose()
        .to_string()
}

#[test]
fn config_yaml_takes_the_target_host_from_mysql_host() {
    // Local default: the MariaDB of scripts/services.sh.
    let local = target_url(&|_| None);
    assert!(local.contains("@127.0.0.1:13306/"), "{local}");
    // In a container: the host named by MYSQL_HOST.
    let env = |name: &str| match name {
        "MYSQL_HOST" => Some("mysql".to_string()),
        "MYSQL_PORT" => Some("3306".to_string()),
        _ => None,
    };
    let url = target_url(&env);
    assert!(url.contains("@mysql:3306/"), "{url}");
}
