//! The JVM inside the db-sync process: found, started once, bridge natives registered.
//!
//! What the JVM allows, and so what this file does: one JVM per process, created once and kept
//! (`JNI_CreateJavaVM` cannot run again in a process, not even after `DestroyJavaVM`); started
//! with `-Xrs`, so that SIGINT and SIGTERM reach Rust instead of running the JVM's shutdown
//! hooks, which would end the process under Rust; `libjvm.so` found at run time from
//! `JAVA_HOME` or the `java` on `PATH`, the error naming every path tried; the bridge's native
//! method registered with `RegisterNatives` once its class is loaded, rather than looked up as
//! a symbol in the executable. A Rust thread that calls Java attaches first. Keys:
//! `engine.lib_dir` (the Debezium jars and `db-sync-bridge.jar`, the class path) and
//! `engine.jvm_options` (default `-Xmx1g`).

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use jni::{InitArgsBuilder, JNIVersion, JavaVM, NativeMethod};

pub const BRIDGE_CLASS: &str = "io/dbsync/bridge/Bridge";
pub const BRIDGE_JAR: &str = "db-sync-bridge.jar";
/// A jar the engine cannot start without; its absence means set-up never ran.
const ENGINE_JAR_PREFIX: &str = "debezium-embedded-";

/// Why the JVM or the bridge cannot start: set-up or configuration, each naming its fix.
#[derive(Debug, thiserror::Error)]
pub enum JvmError {
    #[error("engine.lib_dir {} cannot be read ({source}); run scripts/setup.sh to download the Debezium jars and build the bridge", .dir.display())]
    LibDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is missing from engine.lib_dir {}; run scripts/setup.sh to build the bridge", BRIDGE_JAR, .dir.display())]
    NoBridgeJar { dir: PathBuf },
    #[error("no {}*.jar in engine.lib_dir {}; run scripts/setup.sh to extract the Debezium jars", ENGINE_JAR_PREFIX, .dir.display())]
    NoEngineJar { dir: PathBuf },
    #[error("cannot find libjvm.so (tried: {tried}); install a JDK 17 with scripts/setup.sh or set JAVA_HOME")]
    NoLibjvm { tried: String },
    #[error("bad jar path in engine.lib_dir: {0}")]
    JarPath(#[source] std::env::JoinPathsError),
    #[error("bad engine.jvm_options: {0}")]
    Options(#[source] jni::JvmError),
    #[error("cannot start the JVM from {}: {source}; check engine.jvm_options", .libjvm.display())]
    Start {
        libjvm: PathBuf,
        source: jni::errors::StartJvmError,
    },
    #[error("cannot attach to the JVM: {0}")]
    Attach(#[source] jni::errors::Error),
    #[error("class {} not found in {}; rebuild the bridge with scripts/setup.sh", BRIDGE_CLASS.replace('/', "."), .jar.display())]
    NoBridgeClass { jar: PathBuf },
    #[error("cannot register the bridge's native methods ({0}); the bridge jar does not match this db-sync, rebuild it with scripts/setup.sh")]
    Register(#[source] jni::errors::Error),
}

/// The process's one JVM, or why it could not start (kept: a JVM cannot be created twice).
static JVM: OnceLock<Result<JavaVM, Arc<JvmError>>> = OnceLock::new();

/// The jars of `lib_dir`, sorted, or a one-line error saying how to get them.
pub fn classpath(lib_dir: &Path) -> Result<Vec<PathBuf>, JvmError> {
    let entries = std::fs::read_dir(lib_dir).map_err(|source| JvmError::LibDir {
        dir: lib_dir.to_path_buf(),
        source,
    })?;
    let mut jars: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jar"))
        .collect();
    jars.sort();
    let has = |pred: &dyn Fn(&str) -> bool| {
        jars.iter()
            .any(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(pred))
    };
    let dir = lib_dir.to_path_buf();
    if !has(&|n| n == BRIDGE_JAR) {
        return Err(JvmError::NoBridgeJar { dir });
    }
    if !has(&|n| n.starts_with(ENGINE_JAR_PREFIX)) {
        return Err(JvmError::NoEngineJar { dir });
    }
    Ok(jars)
}

/// Where `libjvm.so` may be, in the order tried: `$JAVA_HOME`, then the `java` on PATH.
pub fn libjvm_candidates() -> Vec<PathBuf> {
    let mut homes: Vec<PathBuf> = Vec::new();
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
        homes.push(PathBuf::from(home));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let java = dir.join("java");
            if let Ok(real) = std::fs::canonicalize(&java) {
                // <home>/bin/java
                if let Some(home) = real.parent().and_then(Path::parent) {
                    homes.push(home.to_path_buf());
                }
                break;
            }
        }
    }
    let mut out = Vec::new();
    for home in homes {
        for rel in [
            "lib/server/libjvm.so",
            "jre/lib/server/libjvm.so",
            "lib/libjvm.so",
        ] {
            out.push(home.join(rel));
        }
    }
    out
}

pub fn find_libjvm() -> Result<PathBuf, JvmError> {
    let candidates = libjvm_candidates();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            JvmError::NoLibjvm {
                tried: if tried.is_empty() {
                    "JAVA_HOME unset, no java on PATH".to_string()
                } else {
                    tried.join(", ")
                },
            }
        })
}

/// Starts the process's JVM (once) with the jars of `lib_dir` and `options`, loads the bridge
/// class and registers its natives. Later calls return the same JVM and ignore their arguments.
pub fn start(
    lib_dir: &Path,
    options: &[String],
    natives: fn() -> Vec<NativeMethod>,
) -> Result<&'static JavaVM, Arc<JvmError>> {
    let started = JVM.get_or_init(|| start_once(lib_dir, options, natives).map_err(Arc::new));
    started.as_ref().map_err(Arc::clone)
}

fn start_once(
    lib_dir: &Path,
    options: &[String],
    natives: fn() -> Vec<NativeMethod>,
) -> Result<JavaVM, JvmError> {
    let jars = classpath(lib_dir)?;
    let libjvm = find_libjvm()?;
    let cp = std::env::join_paths(&jars).map_err(JvmError::JarPath)?;
    let verbose = tracing::enabled!(tracing::Level::DEBUG);
    let (log_level, engine_level) = if verbose {
        ("INFO", "INFO")
    } else {
        ("WARN", "FATAL")
    };
    let mut builder = InitArgsBuilder::new()
        .version(JNIVersion::V8)
        // Rust owns SIGINT/SIGTERM: without -Xrs the JVM's handlers run shutdown hooks and
        // end the process under us.
        .option("-Xrs")
        .option(format!("-Djava.class.path={}", cp.to_string_lossy()))
        .option(format!("-Ddbsync.log.level={log_level}"))
        .option(format!("-Ddbsync.log.engine={engine_level}"))
        .option(format!("-Ddbsync.log.stacktraces={verbose}"));
    for opt in options {
        builder = builder.option(opt.as_str());
    }
    let args = builder.build().map_err(JvmError::Options)?;
    let vm =
        JavaVM::with_libjvm(args, || Ok(libjvm.clone())).map_err(|source| JvmError::Start {
            libjvm: libjvm.clone(),
            source,
        })?;
    {
        let mut env = vm.attach_current_thread().map_err(JvmError::Attach)?;
        let class = env.find_class(BRIDGE_CLASS).map_err(|_| {
            let _ = env.exception_clear();
            JvmError::NoBridgeClass {
                jar: lib_dir.join(BRIDGE_JAR),
            }
        })?;
        env.register_native_methods(&class, &natives())
            .map_err(|e| {
                let _ = env.exception_clear();
                JvmError::Register(e)
            })?;
    }
    Ok(vm)
}

/// A native method entry for `register_native_methods`.
pub fn native(name: &str, sig: &str, f: *mut c_void) -> NativeMethod {
    NativeMethod {
        name: name.into(),
        sig: sig.into(),
        fn_ptr: f,
    }
}
