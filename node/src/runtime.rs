//! The wasm sandbox: one wasmtime `Engine` per node (epoch interruption for preemption),
//! modules and components compiled once per digest (in memory and on disk), pre-instantiated,
//! and run in a fresh `Store` per container run with WASI preview 1 or preview 2, argv, env,
//! stdout/stderr into the container's log, and a memory cap.
//!
//! Invariants: nothing of the host is visible to a guest but what a run is given (no host
//! files, environment or sockets); a run can always be stopped (epoch yields + cancellation);
//! a guest trap or a missing export is an outcome of the run, never a panic of the node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::logs::LogSink;

/// Errors of preparing a module.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bytes are not a valid module or component for this engine.
    #[error("invalid WebAssembly: {0}")]
    Invalid(String),
    /// It is valid but cannot run as a command (missing `_start` / `wasi:cli/run`, unknown imports).
    #[error("not runnable as a WASI command: {0}")]
    NotRunnable(String),
    /// The engine could not be configured.
    #[error("engine set-up: {0}")]
    Engine(String),
    /// The module's bytes could not be read from the node's cache.
    #[error("reading the module: {0}")]
    Read(#[from] std::io::Error),
}

/// A module's bytes: at hand, or a file in the node's blob cache that is read only when the
/// runtime has not prepared that digest yet (a start of a prepared module reads nothing).
#[derive(Clone, Debug)]
pub enum Source {
    /// The bytes themselves.
    Bytes(bytes::Bytes),
    /// A verified blob on disk.
    File(PathBuf),
}

impl Source {
    fn load(self) -> Result<bytes::Bytes, RuntimeError> {
        match self {
            Source::Bytes(b) => Ok(b),
            Source::File(p) => Ok(std::fs::read(p)?.into()),
        }
    }
}

impl From<bytes::Bytes> for Source {
    fn from(b: bytes::Bytes) -> Self {
        Source::Bytes(b)
    }
}

/// How often the epoch ticks; a spinning guest yields at least this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Per-run host state for preview 1 modules.
pub struct P1State {
    wasi: WasiP1Ctx,
    limits: MemoryCap,
}

/// Per-run host state for preview 2 components (commands, and HTTP handlers: one per request).
pub struct P2State {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: MemoryCap,
    http: WasiHttpCtx,
    /// What outbound HTTP may reach (`wasi:http/outgoing-handler`).
    outbound: Box<dyn WasiHttpHooks>,
}

impl P2State {
    /// State for one run or one request.
    pub fn new(ctx: WasiCtx, limits: MemoryCap, outbound: Box<dyn WasiHttpHooks>) -> Self {
        P2State {
            ctx,
            table: ResourceTable::new(),
            limits,
            http: WasiHttpCtx::new(),
            outbound,
        }
    }
    /// Did the guest try to grow past its memory limit?
    pub fn out_of_memory(&self) -> bool {
        self.limits.denied
    }
    /// The memory cap (for `Store::limiter`).
    pub fn limits_mut(&mut self) -> &mut MemoryCap {
        &mut self.limits
    }
}

impl WasiHttpView for P2State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: self.outbound.as_mut(),
        }
    }
}

/// Outbound HTTP for a workload that may reach nothing: every request fails with
/// `HTTP-request-denied`.
pub struct DenyOutbound;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn std::future::Future<Output = OutboundResult> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// What a `send_request` hook resolves to.
pub type OutboundResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory (and tables) of one run and remembers a refused growth (OOM).
pub struct MemoryCap {
    limit: Option<usize>,
    denied: bool,
    usage: Option<Arc<Usage>>,
    /// Bytes of linear memory and of table elements in use (all memories and tables).
    memory: usize,
    tables: usize,
}

/// What one table element costs against the memory limit (a pointer).
const TABLE_ELEMENT_BYTES: usize = 8;

impl MemoryCap {
    /// A cap of `limit` bytes (none: unlimited), reporting to `usage`.
    pub fn new(limit: Option<usize>, usage: Option<Arc<Usage>>) -> Self {
        MemoryCap {
            limit,
            denied: false,
            usage,
            memory: 0,
            tables: 0,
        }
    }
    /// Would `memory` + `tables` bytes stay within the limit?
    fn fits(&self, memory: usize, tables: usize) -> bool {
        self.limit
            .is_none_or(|l| memory.saturating_add(tables) <= l)
    }
}

/// Counts a run out of `Usage::instances` (and its memory) however the run ends.
struct RunningGuard(Arc<Usage>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.instances.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.memory_bytes.store(0, Ordering::Relaxed);
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let memory = self.memory.saturating_sub(current).saturating_add(desired);
        if !self.fits(memory, self.tables) || maximum.is_some_and(|m| desired > m) {
            self.denied = true;
            return Ok(false);
        }
        self.memory = memory;
        if let Some(u) = &self.usage {
            u.memory_bytes.store(memory as u64, Ordering::Relaxed);
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let tables = self
            .tables
            .saturating_sub(current.saturating_mul(TABLE_ELEMENT_BYTES))
            .saturating_add(desired.saturating_mul(TABLE_ELEMENT_BYTES));
        if desired > 10_000_000
            || !self.fits(self.memory, tables)
            || maximum.is_some_and(|m| desired > m)
        {
            self.denied = true;
            return Ok(false);
        }
        self.tables = tables;
        Ok(true)
    }
}

/// A compiled, pre-instantiated workload.
pub enum Prepared {
    /// A WASI preview 1 command module.
    Module(InstancePre<P1State>),
    /// A WASI preview 2 command component.
    Component(CommandPre<P2State>),
    /// A `wasi:http/incoming-handler` component: an HTTP service, one instance per request.
    Http(ProxyPre<P2State>),
}

impl Prepared {
    /// Whether the guest can create or open a file at all: a module that imports WASI's
    /// `path_open`, a component that imports any `wasi:filesystem` interface. One that cannot
    /// has no use for a termination-message file (and the node saves making one per run).
    pub fn opens_files(&self) -> bool {
        match self {
            Prepared::Module(pre) => pre
                .module()
                .imports()
                .any(|i| i.module() == "wasi_snapshot_preview1" && i.name() == "path_open"),
            Prepared::Component(cmd) => imports_filesystem(cmd.instance_pre().component()),
            Prepared::Http(pre) => imports_filesystem(pre.instance_pre().component()),
        }
    }
}

fn imports_filesystem(c: &Component) -> bool {
    c.component_type()
        .imports(c.engine())
        .any(|(name, _)| name.starts_with("wasi:filesystem/"))
}

/// What one run gets.
pub struct RunSpec {
    /// argv, `argv[0]` included.
    pub argv: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Linear memory cap in bytes.
    pub memory_limit: Option<usize>,
    /// Where stdout and stderr go.
    pub log: LogSink,
    /// The directories the guest sees (volume mounts).
    pub preopens: Vec<crate::volumes::Preopen>,
    /// `workingDir`: also preopened as `.` and given as the initial cwd and `PWD`.
    pub cwd: Option<crate::volumes::Preopen>,
    /// `limits.cpu` in millicores: the guest runs at most this share of one core.
    pub cpu_millis: Option<u64>,
    /// What this container uses, updated as it runs (for the node's `/metrics`).
    pub usage: Arc<Usage>,
    /// What outbound HTTP may reach (a fresh policy object per run or request).
    pub outbound: OutboundFactory,
}

/// Makes the outbound HTTP policy of one run or request.
pub type OutboundFactory = Arc<dyn Fn() -> Box<dyn WasiHttpHooks> + Send + Sync>;

impl RunSpec {
    /// The WASI context of one run (or one HTTP request): argv, env, log streams, mounts.
    pub fn wasi(&self) -> Result<wasmtime_wasi::WasiCtxBuilder, String> {
        let mut builder = WasiCtx::builder();
        builder
            .args(&self.argv)
            .envs(&self.env)
            .stdout(self.log.stream(false))
            .stderr(self.log.stream(true));
        let mut dirs: Vec<&crate::volumes::Preopen> = self.preopens.iter().collect();
        if let Some(cwd) = &self.cwd {
            builder.env("PWD", &cwd.guest).initial_cwd(&cwd.guest);
            dirs.push(cwd);
        }
        let perms = |p: &crate::volumes::Preopen| {
            if p.read_only {
                wasmtime_wasi::FsPerms::ReadOnly
            } else {
                wasmtime_wasi::FsPerms::ReadWrite
            }
        };
        for p in dirs {
            builder
                .preopened_dir(p.host.proc_path(), &p.guest, perms(p))
                .map_err(|e| format!("mounting {}: {e:#}", p.guest))?;
        }
        if let Some(cwd) = &self.cwd {
            builder
                .preopened_dir(cwd.host.proc_path(), ".", perms(cwd))
                .map_err(|e| format!("workingDir {}: {e:#}", cwd.guest))?;
        }
        Ok(builder)
    }
}

/// What one container uses, across its runs.
#[derive(Debug, Default)]
pub struct Usage {
    /// CPU time its instances ran, in nanoseconds.
    pub cpu_nanos: AtomicU64,
    /// Linear memory of its running instance, in bytes.
    pub memory_bytes: AtomicU64,
    /// Instances running now (0 or 1 for a command).
    pub instances: AtomicU64,
    /// Times the container was restarted (its `restartCount`).
    pub restarts: AtomicU64,
    /// Requests an HTTP container served.
    pub http: crate::gateway::HttpMetrics,
}

impl Usage {
    /// Count an instance in (for as long as the guard lives).
    pub fn running(self: &Arc<Self>) -> impl Drop {
        self.instances.fetch_add(1, Ordering::Relaxed);
        RunningGuard(self.clone())
    }
}

/// CFS-like CPU bandwidth control on epoch ticks: in every `CPU_PERIOD` a limited guest runs at
/// most `limit × CPU_PERIOD`, then sleeps to the end of the period. Every guest yields to the
/// executor at each tick, limited or not, so a spinning guest never starves the agent.
pub const CPU_PERIOD: Duration = Duration::from_millis(100);

pub struct CpuShare {
    quota: Option<Duration>,
    period_start: std::time::Instant,
    used_in_period: Duration,
    resumed_at: Arc<Mutex<Resumed>>,
    usage: Arc<Usage>,
}

/// Where a guest last resumed: when, on which thread, and the CPU time that thread had used.
#[derive(Clone, Copy, Debug)]
struct Resumed {
    at: std::time::Instant,
    thread: std::thread::ThreadId,
    cpu: Duration,
}

/// The CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl Resumed {
    fn now() -> Resumed {
        Resumed {
            at: std::time::Instant::now(),
            thread: std::thread::current().id(),
            cpu: thread_cpu(),
        }
    }

    /// What the guest ran since: its thread's own CPU time while still on the thread it
    /// resumed on (time the thread stood preempted by others is not the guest's), else the
    /// wall time; at most one tick (a longer stretch was spent in a host call).
    fn ran(&self, now: std::time::Instant) -> Duration {
        let ran = if std::thread::current().id() == self.thread {
            thread_cpu().saturating_sub(self.cpu)
        } else {
            now.saturating_duration_since(self.at)
        };
        ran.min(EPOCH_TICK)
    }
}

impl CpuShare {
    /// A share of `cpu_millis` of one core (none: unlimited), accounted to `usage`.
    pub fn new(cpu_millis: Option<u64>, usage: Arc<Usage>) -> Self {
        let now = std::time::Instant::now();
        CpuShare {
            quota: cpu_millis.map(|m| CPU_PERIOD * (m.clamp(1, 1000) as u32) / 1000),
            period_start: now,
            used_in_period: Duration::ZERO,
            resumed_at: Arc::new(Mutex::new(Resumed::now())),
            usage,
        }
    }

    /// Charge `ran`, which ended at `now`, to the current period; how long to pause. A slice
    /// that ends after its period is over counts in the next one, and an overrun of the quota
    /// (a slice is up to a tick) is paid from the next period, so over time a guest runs its
    /// limit and no more. Pure but for its own state.
    fn charge(&mut self, ran: Duration, now: std::time::Instant) -> Duration {
        if now.duration_since(self.period_start) >= CPU_PERIOD {
            // A new period, from when this slice began.
            self.period_start = now.checked_sub(ran).unwrap_or(now);
            self.used_in_period = ran;
        } else {
            self.used_in_period += ran;
        }
        match self.quota {
            Some(q) if self.used_in_period >= q => {
                let pause = (self.period_start + CPU_PERIOD).saturating_duration_since(now);
                self.period_start += CPU_PERIOD;
                self.used_in_period -= q;
                pause
            }
            _ => Duration::ZERO,
        }
    }

    /// Called at each epoch deadline: account the slice just run, then yield (sleeping out the
    /// rest of the period when the quota is spent).
    pub fn on_tick(&mut self) -> wasmtime::UpdateDeadline {
        let now = std::time::Instant::now();
        let ran = match self.resumed_at.lock() {
            Ok(r) => r.ran(now),
            Err(_) => EPOCH_TICK,
        };
        self.usage.cpu_nanos.fetch_add(
            ran.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
        let pause = self.charge(ran, now);
        let resumed_at = self.resumed_at.clone();
        wasmtime::UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                if pause.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(pause).await;
                }
                if let Ok(mut t) = resumed_at.lock() {
                    *t = Resumed::now();
                }
            }),
        )
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest exited with this code.
    Code(i32),
    /// The guest trapped.
    Trap(String),
    /// It exceeded its memory limit.
    OutOfMemory(String),
    /// It was stopped from outside.
    Stopped,
    /// The sandbox could not be set up (a mount failed).
    Failed(String),
    /// The node stopped it (a failed liveness or startup probe); why.
    Killed(String),
}

/// Nice value of the compiler threads: a burst of compilations (many pods of new modules)
/// must not delay requests to pods already serving.
pub const COMPILE_NICE: i32 = 10;

/// Compilations at once: cranelift already compiles a module's functions in parallel, and many
/// at once only multiply its scratch memory (pods of many distinct modules starting together).
pub const COMPILATIONS: usize = 2;

/// Epoch ticks a throwaway instantiation (start functions included) may run: one second.
const INSTANTIATE_TICKS: u64 = 100;

/// Bytes of a linear memory slot reset in place (not decommitted) when an instance ends.
pub const KEEP_RESIDENT: usize = 2 << 20;

/// Instance slots of the pooling allocator (core instances, memories, tables, stacks).
pub const POOL_SLOTS: u32 = 2000;

fn engine_config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    config.memory_init_cow(true);
    if pooling {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_core_instances(POOL_SLOTS)
            .total_component_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .total_stacks(POOL_SLOTS)
            .max_memory_size(4 << 30)
            .max_core_instance_size(16 << 20)
            .max_component_instance_size(16 << 20)
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(64)
            .max_tables_per_module(8)
            .table_elements(100_000)
            .max_unused_warm_slots(100)
            // Reset a slot's dirty pages in place (found with PAGEMAP_SCAN where the kernel has
            // it) instead of madvise: no page faults on reuse, no TLB shootdowns per instance.
            // HTTP services instantiate once per request; this is most of their per-request cost.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(16);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// The node's runtime.
pub struct Runtime {
    engine: Engine,
    p1: Linker<P1State>,
    p2: wasmtime::component::Linker<P2State>,
    cache_dir: PathBuf,
    prepared: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Prepared>>>>>,
    /// Compilations running at once (each uses every core already, and a lot of scratch memory).
    compiling: tokio::sync::Semaphore,
    stop_ticker: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Is this a component (rather than a core module)? Both start with `\0asm`; the layer
/// field of the version word tells them apart.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[6..8] == [1, 0]
}

impl Runtime {
    /// Configure the engine and linkers; compiled code is cached under `cache_dir`.
    pub fn new(cache_dir: &Path) -> Result<Arc<Self>, RuntimeError> {
        let engine = match Engine::new(&engine_config(true)) {
            Ok(e) => {
                tracing::debug!(
                    "wasmtime: pooling instance allocator, copy-on-write memory images"
                );
                e
            }
            Err(e) => {
                tracing::warn!(error = %e, "the pooling allocator is not available here (virtual memory?); allocating instances on demand");
                Engine::new(&engine_config(false))
                    .map_err(|e| RuntimeError::Engine(e.to_string()))?
            }
        };
        // Cranelift compiles on rayon's global pool: make it ours, at a lower CPU priority.
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("skiff-compile-{i}"))
            .start_handler(|_| {
                let tid = rustix::thread::gettid();
                if let Err(e) = rustix::process::setpriority_process(Some(tid), COMPILE_NICE) {
                    tracing::debug!(error = %e, "could not lower the compiler threads' priority");
                }
            })
            .build_global();
        let mut p1 = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1, |s: &mut P1State| &mut s.wasi)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let mut p2 = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut p2)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut p2)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        std::fs::create_dir_all(cache_dir)
            .map_err(|e| RuntimeError::Engine(format!("{}: {e}", cache_dir.display())))?;
        let stop_ticker = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("skiff-epoch".into())
            .spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        Ok(Arc::new(Runtime {
            engine,
            p1,
            p2,
            cache_dir: cache_dir.to_path_buf(),
            prepared: Mutex::new(HashMap::new()),
            compiling: tokio::sync::Semaphore::new(COMPILATIONS),
            stop_ticker,
        }))
    }

    /// Drop compiled workloads no container holds any more (they stay in the disk cache, so a
    /// later pod of the same module loads them again in a fraction of a millisecond).
    pub fn release_unused(&self) {
        if let Ok(mut m) = self.prepared.lock() {
            m.retain(|_, cell| match cell.get() {
                // Still compiling: a pod is waiting for it.
                None => Arc::strong_count(cell) > 1,
                Some(p) => Arc::strong_count(p) > 1 || Arc::strong_count(cell) > 1,
            });
        }
    }

    /// The compiled artifacts on disk (any engine's): their paths and sizes, by the hex of the
    /// module's digest.
    fn compiled_files(&self) -> HashMap<String, Vec<(PathBuf, u64)>> {
        let mut out: HashMap<String, Vec<(PathBuf, u64)>> = HashMap::new();
        for e in std::fs::read_dir(&self.cache_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name();
            let Some((hex, _)) = name
                .to_str()
                .filter(|n| n.ends_with(".cwasm"))
                .and_then(|n| n.split_once('-'))
            else {
                continue;
            };
            if let Some(m) = e.metadata().ok().filter(std::fs::Metadata::is_file) {
                out.entry(hex.to_string())
                    .or_default()
                    .push((e.path(), m.len()));
            }
        }
        out
    }

    /// The bytes the compiled artifacts take on disk, by `sha256:<hex>` of the module.
    pub fn compiled_bytes(&self) -> HashMap<String, u64> {
        self.compiled_files()
            .into_iter()
            .map(|(hex, files)| (format!("sha256:{hex}"), files.iter().map(|(_, n)| n).sum()))
            .collect()
    }

    /// Remove the compiled artifacts of `digest` (a module the node's cache dropped).
    pub fn forget(&self, digest: &str) {
        self.release_unused();
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        for (path, _) in self.compiled_files().remove(hex).unwrap_or_default() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// wasmtime's version, for the node's `nodeInfo`.
    pub fn version() -> &'static str {
        "48.0.8"
    }

    fn cache_path(&self, digest: &str) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.cache_dir
            .join(format!("{hex}-{:016x}.cwasm", h.finish()))
    }

    /// Compile (or load from the cache) and pre-instantiate the module with this digest. Pods
    /// starting together share one compilation per digest (single flight).
    pub async fn prepare(
        self: &Arc<Self>,
        digest: &str,
        source: impl Into<Source>,
    ) -> Result<Arc<Prepared>, RuntimeError> {
        let source = source.into();
        let cell = match self.prepared.lock() {
            Ok(mut m) => m.entry(digest.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        cell.get_or_try_init(|| async {
            // A cached artifact loads in a fraction of a millisecond; a compilation waits its turn.
            let turn = if self.cache_path(digest).exists() {
                None
            } else {
                Some(
                    self.compiling
                        .acquire()
                        .await
                        .map_err(|e| RuntimeError::Engine(e.to_string()))?,
                )
            };
            let this = self.clone();
            let digest_owned = digest.to_string();
            let prepared = if turn.is_none() {
                tokio::task::spawn_blocking(move || this.compile(&digest_owned, &source.load()?))
                    .await
                    .map_err(|e| RuntimeError::Engine(e.to_string()))??
            } else {
                // Compiling runs on the low-priority pool, so requests and heartbeats on the
                // same cores go first.
                let (tx, rx) = tokio::sync::oneshot::channel();
                rayon::spawn(move || {
                    let _ = tx.send(source.load().and_then(|b| this.compile(&digest_owned, &b)));
                });
                rx.await
                    .map_err(|e| RuntimeError::Engine(e.to_string()))??
            };
            // An HTTP service's first request should cost what every other one does: build
            // its copy-on-write memory image and the rest of wasmtime's lazy state now, with a
            // throwaway instance, before the pod can be Ready.
            if matches!(prepared, Prepared::Http(_)) {
                self.instantiate(&prepared).await?;
            }
            Ok(Arc::new(prepared))
        })
        .await
        .cloned()
    }

    fn compile(&self, digest: &str, bytes: &[u8]) -> Result<Prepared, RuntimeError> {
        let path = self.cache_path(digest);
        let component = is_component(bytes);
        if component {
            let c = self
                .load_cached(&path, |p| unsafe {
                    Component::deserialize_file(&self.engine, p)
                })
                .map(Ok::<_, RuntimeError>)
                .unwrap_or_else(|| {
                    let c = Component::new(&self.engine, bytes)
                        .map_err(|e| RuntimeError::Invalid(format!("{e:#}")))?;
                    self.store_cached(&path, c.serialize());
                    Ok(c)
                })?;
            let pre = self
                .p2
                .instantiate_pre(&c)
                .map_err(|e| RuntimeError::NotRunnable(format!("{e:#}")))?;
            // A component that exports wasi:http/incoming-handler is an HTTP service.
            let exports_handler = c
                .get_export_index(None, "wasi:http/incoming-handler@0.2.0")
                .is_some()
                || c.component_type()
                    .exports(&self.engine)
                    .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2"));
            if exports_handler {
                let proxy = ProxyPre::new(pre).map_err(|e| {
                    RuntimeError::NotRunnable(format!(
                        "the component exports an unusable wasi:http/incoming-handler: {e:#}"
                    ))
                })?;
                return Ok(Prepared::Http(proxy));
            }
            let cmd = CommandPre::new(pre).map_err(|e| {
                RuntimeError::NotRunnable(format!(
                    "the component exports neither wasi:cli/run nor wasi:http/incoming-handler: {e:#}"
                ))
            })?;
            Ok(Prepared::Component(cmd))
        } else {
            let m = self
                .load_cached(&path, |p| unsafe {
                    Module::deserialize_file(&self.engine, p)
                })
                .map(Ok::<_, RuntimeError>)
                .unwrap_or_else(|| {
                    let m = Module::new(&self.engine, bytes)
                        .map_err(|e| RuntimeError::Invalid(format!("{e:#}")))?;
                    self.store_cached(&path, m.serialize());
                    Ok(m)
                })?;
            if m.get_export("_start").is_none() {
                return Err(RuntimeError::NotRunnable(
                    "the module exports no _start function".into(),
                ));
            }
            let pre = self
                .p1
                .instantiate_pre(&m)
                .map_err(|e| RuntimeError::NotRunnable(format!("{e:#}")))?;
            Ok(Prepared::Module(pre))
        }
    }

    /// Load a cached artifact. Safety of `deserialize_file`: the cache holds only files this
    /// runtime wrote from its own compilations, keyed by digest and engine compatibility hash.
    fn load_cached<T>(
        &self,
        path: &Path,
        load: impl FnOnce(&Path) -> wasmtime::Result<T>,
    ) -> Option<T> {
        if !path.exists() {
            return None;
        }
        match load(path) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dropping an unusable compile cache entry");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn store_cached(&self, path: &Path, bytes: wasmtime::Result<Vec<u8>>) {
        let Ok(bytes) = bytes else { return };
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}-{seq}.tmp", std::process::id()));
        if std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, path))
            .is_err()
        {
            tracing::warn!(path = %path.display(), "could not write the compile cache");
        }
    }

    fn bare_state(&self) -> P2State {
        P2State::new(
            WasiCtx::builder().build(),
            MemoryCap::new(None, None),
            Box::new(DenyOutbound),
        )
    }

    /// The engine (HTTP requests make their stores on it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Instantiate a prepared workload in a fresh store and drop it without running it: what a
    /// pod start costs in the runtime (for `skiff bench pods`).
    pub async fn instantiate(&self, prepared: &Prepared) -> Result<(), RuntimeError> {
        let limits = || MemoryCap::new(None, None);
        let err = |e: wasmtime::Error| RuntimeError::NotRunnable(format!("{e:#}"));
        match prepared {
            Prepared::Module(pre) => {
                let wasi = WasiCtx::builder().build_p1();
                let mut store = Store::new(
                    &self.engine,
                    P1State {
                        wasi,
                        limits: limits(),
                    },
                );
                store.set_epoch_deadline(INSTANTIATE_TICKS);
                pre.instantiate_async(&mut store).await.map_err(err)?;
            }
            Prepared::Component(pre) => {
                let mut store = Store::new(&self.engine, self.bare_state());
                store.set_epoch_deadline(INSTANTIATE_TICKS);
                pre.instantiate_async(&mut store).await.map_err(err)?;
            }
            Prepared::Http(pre) => {
                let mut store = Store::new(&self.engine, self.bare_state());
                store.set_epoch_deadline(INSTANTIATE_TICKS);
                pre.instantiate_async(&mut store).await.map_err(err)?;
            }
        }
        Ok(())
    }

    /// Run a prepared workload to its end, or until `stop` is cancelled.
    pub async fn run(&self, prepared: &Prepared, spec: RunSpec, stop: CancellationToken) -> Exit {
        let limits = MemoryCap::new(spec.memory_limit, Some(spec.usage.clone()));
        let mut wasi = match spec.wasi() {
            Ok(w) => w,
            Err(e) => {
                spec.log.finish();
                return Exit::Failed(e);
            }
        };
        let mut share = CpuShare::new(spec.cpu_millis, spec.usage.clone());
        let _running = spec.usage.running();
        let outcome = match prepared {
            Prepared::Module(pre) => {
                let mut store = Store::new(
                    &self.engine,
                    P1State {
                        wasi: wasi.build_p1(),
                        limits,
                    },
                );
                store.limiter(|s| &mut s.limits);
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| Ok(share.on_tick()));
                let run = async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                    start.call_async(&mut store, ()).await
                };
                let r = tokio::select! {
                    r = run => Some(r),
                    _ = stop.cancelled() => None,
                };
                classify(r.map(|r| r.map(|()| 0)), store.data().limits.denied)
            }
            Prepared::Component(pre) => {
                let mut store = Store::new(
                    &self.engine,
                    P2State::new(wasi.build(), limits, (spec.outbound)()),
                );
                store.limiter(|s| &mut s.limits);
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| Ok(share.on_tick()));
                let run = async {
                    let cmd = pre.instantiate_async(&mut store).await?;
                    cmd.wasi_cli_run().call_run(&mut store).await
                };
                let r = tokio::select! {
                    r = run => Some(r),
                    _ = stop.cancelled() => None,
                };
                classify(
                    r.map(|r| r.map(|ok| if ok.is_ok() { 0 } else { 1 })),
                    store.data().limits.denied,
                )
            }
            // An HTTP service is served by the gateway (`crate::gateway`), not run to an end.
            Prepared::Http(_) => Exit::Failed(
                "an HTTP component is served by the node's gateway, not run as a command".into(),
            ),
        };
        spec.log.finish();
        outcome
    }
}

fn classify(r: Option<wasmtime::Result<i32>>, oom: bool) -> Exit {
    match r {
        None => Exit::Stopped,
        Some(Ok(code)) => Exit::Code(code),
        Some(Err(e)) => {
            if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                return Exit::Code(exit.0);
            }
            let msg = format!("{e:#}");
            if oom {
                Exit::OutOfMemory(msg)
            } else {
                Exit::Trap(msg)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    /// A guest that spins, one tick at a time, gets its limit over time and no more, whatever
    /// the slices' phase against the periods.
    #[test]
    fn a_spinning_guest_gets_its_cpu_limit() {
        for (millis, slice_ms) in [(100u64, 10u64), (250, 10), (500, 7), (1000, 10), (50, 3)] {
            let mut share = CpuShare::new(Some(millis), Arc::default());
            let start = share.period_start;
            let mut now = start;
            let mut cpu = Duration::ZERO;
            let slice = Duration::from_millis(slice_ms);
            while now.duration_since(start) < Duration::from_secs(20) {
                now += slice;
                cpu += slice;
                now += share.charge(slice, now);
            }
            let share_of_a_core = cpu.as_secs_f64() / now.duration_since(start).as_secs_f64();
            let want = millis as f64 / 1000.0;
            assert!(
                (share_of_a_core - want).abs() <= want * 0.05,
                "{millis}m in {slice_ms} ms slices ran {share_of_a_core:.3} of a core"
            );
        }
    }

    /// A guest is charged the CPU its thread used, not the wall time: a thread that stood still
    /// (here asleep, as when preempted by other work) is charged next to nothing; one that spun
    /// is charged what it spun, capped at one tick.
    #[test]
    fn a_guest_is_charged_its_threads_cpu_time() {
        let r = Resumed::now();
        std::thread::sleep(EPOCH_TICK * 3);
        assert!(r.ran(std::time::Instant::now()) < EPOCH_TICK / 2);
        let r = Resumed::now();
        let began = std::time::Instant::now();
        let mut x = 0u64;
        while began.elapsed() < EPOCH_TICK * 2 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(r.ran(std::time::Instant::now()) > Duration::ZERO);
        assert!(r.ran(std::time::Instant::now()) <= EPOCH_TICK);
    }

    #[test]
    fn memory_cap_counts_memories_and_tables_together() {
        const MIB: usize = 1 << 20;
        // (limit, steps: memory (current, desired) or table (current, desired), allowed?)
        enum Step {
            Mem(usize, usize),
            Table(usize, usize),
        }
        use Step::*;
        type Case = (Option<usize>, Vec<(Step, bool)>);
        let cases: Vec<Case> = vec![
            (
                None,
                vec![(Mem(0, 512 * MIB), true), (Table(0, 1000), true)],
            ),
            (
                Some(4 * MIB),
                vec![
                    (Mem(0, MIB), true),
                    (Mem(MIB, 4 * MIB), true),
                    (Mem(4 * MIB, 5 * MIB), false),
                ],
            ),
            // Table elements count against the same limit.
            (
                Some(4 * MIB),
                vec![
                    (Mem(0, 3 * MIB), true),
                    (Table(0, MIB / 8), true),
                    (Table(MIB / 8, MIB / 4), false),
                ],
            ),
            // A second memory adds to the first.
            (
                Some(4 * MIB),
                vec![
                    (Mem(0, 2 * MIB), true),
                    (Mem(0, 2 * MIB), true),
                    (Mem(0, MIB), false),
                ],
            ),
        ];
        for (i, (limit, steps)) in cases.into_iter().enumerate() {
            let mut cap = MemoryCap::new(limit, None);
            for (j, (step, want)) in steps.into_iter().enumerate() {
                let got = match step {
                    Mem(c, d) => cap.memory_growing(c, d, None),
                    Table(c, d) => cap.table_growing(c, d, None),
                }
                .unwrap_or(false);
                assert_eq!(got, want, "case {i} step {j}");
            }
        }
    }
}
