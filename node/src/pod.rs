//! Running one pod: a task per container (fetch → compile → run → restart per policy, with
//! Kubernetes' back-off), a status writer that reports the pod's status level-triggered through
//! `pods/status`, and the pure function that derives that status from the containers' records.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState as KState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use skiff_common::events::{pod_ref, EventType};
use skiff_common::image::PullPolicy;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::gateway::Served;
use crate::probe::{Counter, ProbeSpec};
use crate::runtime::{Exit, Prepared as Workload, RunSpec};
use crate::NodeContext;

/// Where a container is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Not running; why.
    Waiting {
        reason: String,
        message: Option<String>,
    },
    /// Running since.
    Running { started_at: Timestamp },
    /// Finished.
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: Timestamp,
        finished_at: Timestamp,
    },
}

/// What the node knows of one container.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Container name.
    pub name: String,
    /// `image` as written.
    pub image: String,
    /// Resolved digest, once fetched.
    pub image_id: Option<String>,
    /// Current state.
    pub state: State,
    /// The previous run, if any.
    pub last_state: Option<State>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Is a terminated container going to run again?
    pub will_restart: bool,
    /// Running and passing its readiness probe (if it has one).
    pub ready: bool,
    /// An init container (runs to completion, in order, before the others).
    pub init: bool,
    /// A sidecar: an init container with `restartPolicy: Always`, started in order with the init
    /// containers, running (and restarted) alongside the app containers, stopped after them.
    pub sidecar: bool,
}

impl Record {
    /// A sidecar counts as initialized once it has started.
    fn sidecar_started(&self) -> bool {
        self.restart_count > 0 || !matches!(self.state, State::Waiting { .. })
    }
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn kstate(s: &State) -> KState {
    match s {
        State::Waiting { reason, message } => KState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => KState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => KState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                reason: Some(reason.clone()),
                message: message.clone(),
                started_at: Some(time(*started_at)),
                finished_at: Some(time(*finished_at)),
                container_id: None,
                signal: None,
            }),
            ..Default::default()
        },
    }
}

/// The pod phase Kubernetes would report for these containers: Pending until every init
/// container has succeeded (Failed if one failed for good), then by the app containers.
pub fn phase(all: &[Record]) -> &'static str {
    let succeeded =
        |r: &Record| matches!(r.state, State::Terminated { exit_code: 0, .. }) && !r.will_restart;
    for r in all.iter().filter(|r| r.init) {
        if r.sidecar {
            if !r.sidecar_started() {
                return "Pending";
            }
            continue;
        }
        if matches!(r.state, State::Terminated { exit_code, .. } if exit_code != 0)
            && !r.will_restart
        {
            return "Failed";
        }
        if !succeeded(r) {
            return "Pending";
        }
    }
    let records: Vec<Record> = all.iter().filter(|r| !r.init).cloned().collect();
    let running = records
        .iter()
        .filter(|r| matches!(r.state, State::Running { .. }))
        .count();
    let done: Vec<&Record> = records
        .iter()
        .filter(|r| matches!(r.state, State::Terminated { .. }) && !r.will_restart)
        .collect();
    let restarting = records.iter().any(|r| {
        r.restart_count > 0 || (matches!(r.state, State::Terminated { .. }) && r.will_restart)
    });
    if !records.is_empty() && done.len() == records.len() {
        let failed = done
            .iter()
            .any(|r| matches!(r.state, State::Terminated { exit_code, .. } if exit_code != 0));
        return if failed { "Failed" } else { "Succeeded" };
    }
    if running > 0 || restarting || !done.is_empty() {
        "Running"
    } else {
        "Pending"
    }
}

/// Keep a condition's `lastTransitionTime` while its status does not change.
pub fn carry_transition_times(new: &mut [PodCondition], old: &[PodCondition]) {
    for c in new.iter_mut() {
        if let Some(o) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            if o.last_transition_time.is_some() {
                c.last_transition_time = o.last_transition_time.clone();
            }
        }
    }
}

/// The pod status for these containers; conditions keep their transition times from `previous`. Pure.
pub fn pod_status(
    all: &[Record],
    start_time: Timestamp,
    host_ip: &str,
    uid: &str,
    previous: Option<&PodStatus>,
    failure: Option<&(String, String)>,
) -> PodStatus {
    let now = Timestamp::now();
    let phase = if failure.is_some() {
        "Failed"
    } else {
        phase(all)
    };
    let records: Vec<&Record> = all.iter().filter(|r| !r.init).collect();
    let inits: Vec<&Record> = all.iter().filter(|r| r.init).collect();
    let uninitialized: Vec<&str> = inits
        .iter()
        .filter(|r| {
            if r.sidecar {
                !r.sidecar_started()
            } else {
                !matches!(r.state, State::Terminated { exit_code: 0, .. }) || r.will_restart
            }
        })
        .map(|r| r.name.as_str())
        .collect();
    // Sidecars count towards readiness, as on Kubernetes.
    let unready: Vec<&str> = records
        .iter()
        .chain(inits.iter().filter(|r| r.sidecar))
        .filter(|r| !(matches!(r.state, State::Running { .. }) && r.ready))
        .map(|r| r.name.as_str())
        .collect();
    let cond = |t: &str, ok: bool, reason: Option<&str>, message: Option<String>| PodCondition {
        type_: t.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(time(now)),
        last_probe_time: None,
        observed_generation: None,
    };
    let ready = unready.is_empty();
    let (reason, message) = if ready {
        (None, None)
    } else if phase == "Succeeded" || phase == "Failed" {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let status_of = |r: &&Record| ContainerStatus {
        name: r.name.clone(),
        image: r.image.clone(),
        image_id: r.image_id.clone().unwrap_or_default(),
        container_id: r
            .image_id
            .as_ref()
            .map(|_| format!("wasm://{uid}/{}/{}", r.name, r.restart_count)),
        ready: matches!(r.state, State::Running { .. }) && r.ready,
        started: Some(matches!(r.state, State::Running { .. })),
        restart_count: r.restart_count,
        state: Some(kstate(&r.state)),
        last_state: Some(r.last_state.as_ref().map(kstate).unwrap_or_default()),
        ..Default::default()
    };
    let statuses = records.iter().map(status_of).collect();
    let init_statuses: Vec<ContainerStatus> = inits.iter().map(status_of).collect();
    let initialized = uninitialized.is_empty();
    let (init_reason, init_message) = if initialized {
        (None, None)
    } else {
        (
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                uninitialized.join(" ")
            )),
        )
    };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", true, None, None),
        cond("Initialized", initialized, init_reason, init_message),
        cond("Ready", ready, reason, message.clone()),
        cond("ContainersReady", ready, reason, message),
        cond("PodScheduled", true, None, None),
    ];
    if let Some(old) = previous.and_then(|p| p.conditions.as_ref()) {
        carry_transition_times(&mut conditions, old);
    }
    PodStatus {
        phase: Some(phase.into()),
        reason: failure.map(|f| f.0.clone()),
        message: failure.map(|f| f.1.clone()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        start_time: Some(time(start_time)),
        host_ip: Some(host_ip.into()),
        host_ips: Some(vec![HostIP { ip: host_ip.into() }]),
        // A pod is reached through its node's address (its gateway), so that is its IP.
        pod_ip: Some(host_ip.into()),
        pod_ips: Some(vec![PodIP { ip: host_ip.into() }]),
        ..Default::default()
    }
}

/// argv as a container runtime builds it: `command` + `args` when `command` is set, else the
/// module's name followed by `args`.
pub fn argv(c: &Container, module_name: &str) -> Vec<String> {
    let args = c.args.clone().unwrap_or_default();
    match c.command.as_ref().filter(|c| !c.is_empty()) {
        Some(cmd) => cmd.iter().cloned().chain(args).collect(),
        None => std::iter::once(module_name.to_string())
            .chain(args)
            .collect(),
    }
}

/// Kubernetes' restart back-off: 10 s doubling to 5 min, reset after 10 min of running.
pub fn next_backoff(current: Duration, ran_for: Duration) -> Duration {
    if ran_for >= Duration::from_secs(600) {
        Duration::from_secs(10)
    } else {
        (current * 2).min(Duration::from_secs(300))
    }
}

/// How long the first status report of a pod waits for its containers to start.
const FIRST_REPORT_WAIT: Duration = Duration::from_millis(20);

/// A pod-level failure: `status.reason` and `status.message`.
type Failure = (String, String);

/// Shared record list plus a change signal for the status writer, and the pod-level failure
/// (`DeadlineExceeded`, `Evicted`) that stops every container.
#[derive(Clone)]
struct Shared {
    records: Arc<Mutex<Vec<Record>>>,
    changed: Arc<Notify>,
    failure: Arc<Mutex<Option<(String, String)>>>,
}

impl Shared {
    fn fail(&self, reason: &str, message: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert((reason.to_string(), message));
        }
        self.changed.notify_one();
    }
    fn failure(&self) -> Option<(String, String)> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }
    fn update(&self, i: usize, f: impl FnOnce(&mut Record)) {
        self.note(i, f);
        self.changed.notify_one();
    }
    /// Change a record without waking the status writer: it goes out with the next report.
    fn note(&self, i: usize, f: impl FnOnce(&mut Record)) {
        if let Ok(mut r) = self.records.lock() {
            if let Some(rec) = r.get_mut(i) {
                f(rec);
            }
        }
    }
    fn snapshot(&self) -> Vec<Record> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// When a deleted pod's containers must be stopped: `None` while the pod is not being deleted.
pub type Termination = tokio::sync::watch::Receiver<Option<tokio::time::Instant>>;

/// Run a pod until its containers are done for good or `stop` is cancelled. Once `terminate`
/// names a deadline (the pod was deleted with a grace period), nothing starts or restarts any
/// more, running containers may finish until the deadline and are interrupted there.
pub async fn run(ctx: Arc<NodeContext>, pod: Pod, stop: CancellationToken, terminate: Termination) {
    let Some(spec) = pod.spec.clone() else { return };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    // The names become the pod's directory (`<ns>_<name>_<uid>`) and its containers'
    // directories: the API validated them, and the node checks again before any touches a path.
    let containers_ok = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .all(|c| skiff_common::names::is_dns1123_label(&c.name));
    let pod_dir = match crate::logs::pod_dir(&ctx.log_root, &ns, &name, &uid) {
        Some(d) if containers_ok => d,
        _ => {
            tracing::error!(namespace = %ns, pod = %name, "refusing a pod whose names are not valid Kubernetes names");
            return;
        }
    };
    // After an agent restart, a pod that was running starts again with its restart count bumped.
    let previous: Vec<ContainerStatus> = pod
        .status
        .as_ref()
        .map(|s| {
            s.container_statuses
                .iter()
                .chain(s.init_container_statuses.iter())
                .flatten()
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let first_reason = if inits.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let record = |c: &Container, init: bool| {
        let prev = previous.iter().find(|p| p.name == c.name);
        let was_running =
            prev.is_some_and(|p| p.state.as_ref().is_some_and(|s| s.running.is_some()));
        Record {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: None,
            state: State::Waiting {
                reason: if init {
                    "PodInitializing"
                } else {
                    first_reason
                }
                .into(),
                message: None,
            },
            last_state: None,
            restart_count: prev
                .map(|p| p.restart_count + i32::from(was_running))
                .unwrap_or(0),
            will_restart: false,
            ready: false,
            init,
            sidecar: init && c.restart_policy.as_deref() == Some("Always"),
        }
    };
    let records: Vec<Record> = inits
        .iter()
        .map(|c| record(c, true))
        .chain(spec.containers.iter().map(|c| record(c, false)))
        .collect();
    let shared = Shared {
        records: Arc::new(Mutex::new(records)),
        changed: Arc::new(Notify::new()),
        failure: Arc::new(Mutex::new(None)),
    };
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // Containers stop when the pod is stopped (deleted) or fails as a whole, or when the grace
    // period of a deletion is over; `terminating` stops starts and restarts.
    let containers_stop = stop.child_token();
    let terminating = containers_stop.child_token();
    tokio::spawn(grace_period(
        terminate,
        terminating.clone(),
        containers_stop.clone(),
    ));

    let writer_stop = CancellationToken::new();
    let initial_status = pod.status.clone();
    let writer = {
        let shared = shared.clone();
        let api = api.clone();
        let name = name.clone();
        let host_ip = ctx.host_ip.clone();
        let uid = uid.clone();
        let writer_stop = writer_stop.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut last: Option<(Vec<Record>, Option<Failure>)> = None;
            let mut last_status = initial_status;
            // A pod whose module is at hand starts within milliseconds: the first report waits
            // that long for the first change, so such a start costs one status write, not two.
            tokio::select! {
                _ = shared.changed.notified() => {}
                _ = tokio::time::sleep(FIRST_REPORT_WAIT) => {}
                _ = writer_stop.cancelled() => {}
            }
            loop {
                let finishing = writer_stop.is_cancelled();
                let snap = (shared.snapshot(), shared.failure());
                if last.as_ref() != Some(&snap) && !stop.is_cancelled() {
                    let status = pod_status(
                        &snap.0,
                        start_time,
                        &host_ip,
                        &uid,
                        last_status.as_ref(),
                        snap.1.as_ref(),
                    );
                    let patch = json!({"status": status});
                    match api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::debug!(pod = %name, "status written");
                            last = Some(snap);
                            last_status = Some(status);
                        }
                        Err(kube::Error::Api(e)) if e.code == 404 => return,
                        Err(e) => {
                            tracing::warn!(pod = %name, error = %e, "status write failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    }
                }
                if finishing {
                    return;
                }
                tokio::select! {
                    _ = shared.changed.notified() => {}
                    _ = writer_stop.cancelled() => {}
                }
            }
        })
    };

    // activeDeadlineSeconds: counted from the pod's start, as Kubernetes does.
    if let Some(secs) = spec.active_deadline_seconds.filter(|s| *s > 0) {
        let shared = shared.clone();
        let containers_stop = containers_stop.clone();
        let elapsed = Timestamp::now()
            .duration_since(start_time)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let left = Duration::from_secs(secs as u64).saturating_sub(elapsed);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(left) => {
                    shared.fail("DeadlineExceeded", "Pod was active on the node longer than the specified deadline".into());
                    containers_stop.cancel();
                }
                _ = containers_stop.cancelled() => {}
            }
        });
    }

    let object = pod_ref(&pod);
    let laid = match lay_out_volumes(&ctx, &pod, &pod_dir, &containers_stop, &object).await {
        Some((l, token_lifetime)) => {
            let l = Arc::new(l);
            if let Some(first) = token_lifetime {
                tokio::spawn(crate::tokens::keep_fresh(
                    ctx.client.clone(),
                    pod.clone(),
                    l.clone(),
                    first,
                    containers_stop.clone(),
                ));
            }
            l
        }
        None => {
            writer_stop.cancel();
            let _ = writer.await;
            return;
        }
    };
    watch_empty_dirs(&laid, &shared, &containers_stop);

    let pod = Arc::new(pod);
    let make = |c: &Container, i: usize, init: bool| ContainerRun {
        ctx: ctx.clone(),
        pod: pod.clone(),
        c: c.clone(),
        i,
        init,
        shared: shared.clone(),
        stop: containers_stop.clone(),
        terminating: terminating.clone(),
        object: object.clone(),
        backoff: Duration::from_secs(10),
        laid: laid.clone(),
        sidecar: false,
        started: None,
    };
    // Sidecars stop after the app containers (or with the pod); they stop restarting as soon as
    // the pod is terminating.
    let sidecars_stop = containers_stop.child_token();
    let sidecars_terminating = sidecars_stop.child_token();
    {
        let (terminating, sidecars_terminating) =
            (terminating.clone(), sidecars_terminating.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = terminating.cancelled() => sidecars_terminating.cancel(),
                _ = sidecars_terminating.cancelled() => {}
            }
        });
    }
    let mut sidecars = Vec::new();
    let mut initialized = true;
    for (i, c) in inits.iter().enumerate() {
        if terminating.is_cancelled() {
            initialized = false;
            break;
        }
        if c.restart_policy.as_deref() == Some("Always") {
            // The next init container starts once this sidecar has started.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let mut run = make(c, i, true);
            run.sidecar = true;
            run.started = Some(tx);
            run.stop = sidecars_stop.clone();
            run.terminating = sidecars_terminating.clone();
            let dir = pod_dir.clone();
            sidecars.push(tokio::spawn(async move { run.run(&dir).await }));
            tokio::select! {
                _ = rx => {}
                _ = terminating.cancelled() => {}
            }
            continue;
        }
        if !make(c, i, true).run(&pod_dir).await {
            initialized = false;
            break;
        }
    }
    if initialized && !terminating.is_cancelled() {
        let tasks = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| make(c, inits.len() + i, false).run(&pod_dir));
        futures::future::join_all(tasks).await;
    }
    sidecars_stop.cancel();
    futures::future::join_all(sidecars).await;
    containers_stop.cancel();
    writer_stop.cancel();
    let _ = writer.await;
}

/// Follow a deletion's deadline: cancel `terminating` as soon as there is one, `stop` when it
/// passes (a later, shorter grace period moves it closer).
async fn grace_period(
    mut terminate: Termination,
    terminating: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let deadline = *terminate.borrow_and_update();
        if let Some(at) = deadline {
            terminating.cancel();
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {
                    stop.cancel();
                    return;
                }
                changed = terminate.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
        } else {
            tokio::select! {
                changed = terminate.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Read the pod's ConfigMaps, Secrets and projected tokens and lay its volumes out under the
/// pod's directory, retrying (with a `FailedMount` event) until it works or the pod is
/// stopped. Also returns the shortest lifetime of the tokens written, if any.
async fn lay_out_volumes(
    ctx: &NodeContext,
    pod: &Pod,
    pod_dir: &std::path::Path,
    stop: &CancellationToken,
    object: &k8s_openapi::api::core::v1::ObjectReference,
) -> Option<(Vec<crate::volumes::Laid>, Option<Duration>)> {
    let has_volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| !v.is_empty());
    if !has_volumes {
        return Some((Vec::new(), None));
    }
    let mut delay = Duration::from_secs(2);
    loop {
        let attempt = async {
            let mut sources = crate::volumes::Sources::fetch(&ctx.client, pod).await?;
            sources.tokens = crate::tokens::request_all(&ctx.client, pod)
                .await
                .map_err(crate::volumes::VolumeError::Api)?;
            let shortest = sources.tokens.values().map(|t| t.lifetime).min();
            let plans =
                crate::volumes::plan(pod, &sources, &ctx.facts(pod), &ctx.allowed_host_paths)?;
            crate::volumes::materialize(pod_dir, &ctx.claims_root, &plans)
                .map(|laid| (laid, shortest))
        };
        match attempt.await {
            Ok(laid) => return Some(laid),
            Err(e) => {
                ctx.recorder
                    .record(
                        object,
                        EventType::Warning,
                        "FailedMount",
                        &format!("MountVolume.SetUp failed: {e}"),
                    )
                    .await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// Evict the pod (as the kubelet does) when an `emptyDir` grows past its `sizeLimit`.
fn watch_empty_dirs(
    laid: &Arc<Vec<crate::volumes::Laid>>,
    shared: &Shared,
    stop: &CancellationToken,
) {
    if !laid.iter().any(|l| l.size_limit.is_some()) {
        return;
    }
    let (laid, shared, stop) = (laid.clone(), shared.clone(), stop.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            for l in laid.iter() {
                let Some(limit) = l.size_limit else { continue };
                let dir = l.dir.clone();
                let used =
                    tokio::task::spawn_blocking(move || crate::volumes::usage(&dir.proc_path()))
                        .await
                        .unwrap_or(0);
                if used > limit {
                    shared.fail(
                        "Evicted",
                        format!(
                            "Usage of EmptyDir volume \"{}\" exceeds the limit \"{limit}\".",
                            l.name
                        ),
                    );
                    stop.cancel();
                    return;
                }
            }
        }
    });
}

/// What a prepared container run needs.
struct Prepared {
    workload: Arc<crate::runtime::Prepared>,
    limits: crate::volumes::Limits,
    env: Vec<(String, String)>,
    preopens: Vec<crate::volumes::Preopen>,
    /// Where the guest's `terminationMessagePath` is on the host: an open directory and the
    /// file's path below it.
    termination: Option<(crate::safefs::DirHandle, std::path::PathBuf)>,
    cwd: Option<crate::volumes::Preopen>,
    log: crate::logs::LogSink,
}

/// Kubernetes' cap on a termination message.
const TERMINATION_MESSAGE_MAX: u64 = 4096;

/// The host file behind the container's `terminationMessagePath` (default
/// `/dev/termination-log`), as an open directory and a path below it. When no mount holds its
/// directory, that directory becomes a fresh writable preopen holding an empty file, as the
/// kubelet bind-mounts one.
fn termination_file(
    c: &Container,
    pod_dir: &std::path::Path,
    preopens: &mut Vec<crate::volumes::Preopen>,
) -> Result<Option<(crate::safefs::DirHandle, std::path::PathBuf)>, String> {
    let path = c
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("/dev/termination-log");
    let Some((dir, file)) = path.rsplit_once('/') else {
        return Ok(None);
    };
    let dir = if dir.is_empty() { "/" } else { dir };
    if file.is_empty() || file == "." || file == ".." || path.split('/').any(|p| p == "..") {
        return Ok(None);
    }
    // A mount that holds the directory: the file lives in that volume.
    let inside = |guest: &str| {
        let guest = guest.trim_end_matches('/');
        dir == guest
            || guest.is_empty()
            || dir
                .strip_prefix(guest)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if let Some(p) = preopens.iter().find(|p| inside(&p.guest)) {
        let rest = path
            .strip_prefix(p.guest.trim_end_matches('/'))
            .unwrap_or(path)
            .trim_start_matches('/');
        return Ok(Some((p.host.clone(), std::path::PathBuf::from(rest))));
    }
    let host_dir = pod_dir.join(&c.name).join("termination");
    let _ = std::fs::remove_dir_all(&host_dir);
    std::fs::create_dir_all(&host_dir).map_err(|e| format!("{}: {e}", host_dir.display()))?;
    let handle = crate::safefs::DirHandle::open(&host_dir).map_err(|e| e.to_string())?;
    handle.create_file(file).map_err(|e| e.to_string())?;
    preopens.push(crate::volumes::Preopen {
        host: handle.clone(),
        guest: dir.to_string(),
        read_only: false,
    });
    Ok(Some((handle, std::path::PathBuf::from(file))))
}

/// The termination message a guest wrote (at most 4 KiB, as Kubernetes keeps), if any. Read
/// from within its directory without following a link: a guest that replaced the file with a
/// link to a host file gets nothing.
fn read_termination_message(
    (dir, rel): &(crate::safefs::DirHandle, std::path::PathBuf),
) -> Option<String> {
    let buf = match dir.read_file(rel, TERMINATION_MESSAGE_MAX) {
        Ok(b) => b?,
        Err(e) => {
            tracing::debug!(error = %e, "termination message not read");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&buf).into_owned();
    (!text.trim().is_empty()).then_some(text)
}

/// A container's probes that skiff runs.
struct Probes {
    startup: Option<ProbeSpec>,
    liveness: Option<ProbeSpec>,
    readiness: Option<ProbeSpec>,
}

impl Probes {
    fn of(c: &Container) -> Probes {
        let read = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref().and_then(ProbeSpec::from_k8s)
        };
        Probes {
            startup: read(&c.startup_probe),
            liveness: read(&c.liveness_probe),
            readiness: read(&c.readiness_probe),
        }
    }
}

async fn unreachable_pending() -> String {
    std::future::pending().await
}

/// One container's life on this node, with what it reports to.
struct ContainerRun {
    ctx: Arc<NodeContext>,
    pod: Arc<Pod>,
    c: Container,
    i: usize,
    init: bool,
    shared: Shared,
    stop: CancellationToken,
    /// The pod is being deleted: no (re)starts, waits end.
    terminating: CancellationToken,
    object: k8s_openapi::api::core::v1::ObjectReference,
    backoff: Duration,
    laid: Arc<Vec<crate::volumes::Laid>>,
    /// A sidecar: restarted whatever the pod's `restartPolicy`.
    sidecar: bool,
    /// Told the first time the container runs.
    started: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ContainerRun {
    async fn event(&self, kind: EventType, reason: &str, message: &str) {
        self.ctx
            .recorder
            .record(&self.object, kind, reason, message)
            .await;
    }

    /// Record a Warning event for each outbound HTTP call denied (allowed hosts, NetworkPolicy).
    fn report_denied_outbound(
        &self,
        mut denied: tokio::sync::mpsc::UnboundedReceiver<(&'static str, String)>,
    ) {
        let recorder = self.ctx.recorder.clone();
        let object = self.object.clone();
        tokio::spawn(async move {
            while let Some((reason, msg)) = denied.recv().await {
                recorder
                    .record(&object, EventType::Warning, reason, &msg)
                    .await;
            }
        });
    }

    /// The gateway's handle on this HTTP container.
    fn served(
        &self,
        pre: wasmtime_wasi_http::p2::bindings::ProxyPre<crate::runtime::P2State>,
        spec: RunSpec,
    ) -> Arc<Served> {
        let annotation = |k: &str| {
            self.pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|v| *v > 0)
        };
        let ports = self
            .c
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .map(|p| (p.name.clone(), p.container_port as u16))
            .collect();
        Served::new(
            (
                self.pod.metadata.namespace.clone().unwrap_or_default(),
                self.pod.metadata.name.clone().unwrap_or_default(),
            ),
            self.c.name.clone(),
            ports,
            pre,
            spec,
            // Capped: a pod author's annotation never makes a container's requests unbounded.
            annotation(crate::gateway::CONCURRENCY_ANNOTATION)
                .map_or(crate::gateway::DEFAULT_CONCURRENCY, |v| {
                    v.min(crate::gateway::MAX_CONCURRENCY as u64) as usize
                }),
            annotation(crate::gateway::TIMEOUT_ANNOTATION)
                .map_or(crate::gateway::DEFAULT_TIMEOUT, |v| {
                    Duration::from_secs(v).min(crate::gateway::MAX_TIMEOUT)
                }),
        )
    }

    /// Serve an HTTP container (already added to the node's gateway) until it is stopped; once
    /// the pod is terminating, until its in-flight requests are done and no new ones come. It
    /// leaves the gateway on return.
    async fn serve(&self, served: &Arc<Served>, stop: &CancellationToken) -> Exit {
        let exit = tokio::select! {
            _ = stop.cancelled() => Exit::Stopped,
            _ = self.terminating.cancelled() => {
                served.mark_terminating();
                tokio::select! {
                    _ = served.drained() => Exit::Code(0),
                    _ = stop.cancelled() => Exit::Stopped,
                }
            }
        };
        self.ctx.gateway.remove(served);
        served.finish();
        exit
    }

    /// Run the container's probes. Readiness is written to its record; the future ends only when
    /// a startup or liveness probe has failed for good, with what to say.
    async fn probe(&self, served: Option<Arc<Served>>, probes: &Probes) -> String {
        let served = served.as_ref();
        if let Some(p) = &probes.startup {
            if !self.probe_until(p, "Startup", served, Some).await {
                return "failed startup probe".into();
            }
            if probes.readiness.is_none() {
                self.shared.update(self.i, |r| r.ready = true);
            }
        }
        let readiness = async {
            match &probes.readiness {
                Some(p) => {
                    self.probe_until(p, "Readiness", served, |v| {
                        self.shared.update(self.i, |r| r.ready = v);
                        None::<()>
                    })
                    .await
                }
                None => std::future::pending().await,
            }
        };
        let liveness = async {
            match &probes.liveness {
                Some(p) => {
                    self.probe_until(p, "Liveness", served, |v| (!v).then_some(()))
                        .await;
                    "failed liveness probe".to_string()
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            why = liveness => why,
            () = readiness => unreachable_pending().await,
        }
    }

    /// Run probe `p` every period (after its initial delay), with an `Unhealthy` event for each
    /// failure, until `on_verdict` (told each change of verdict) returns a value.
    async fn probe_until<R>(
        &self,
        p: &ProbeSpec,
        kind: &str,
        served: Option<&Arc<Served>>,
        mut on_verdict: impl FnMut(bool) -> Option<R>,
    ) -> R {
        tokio::time::sleep(p.initial_delay).await;
        let mut c = Counter::new();
        loop {
            let r = crate::probe::check(p, served).await;
            let ok = r.is_ok();
            if let Err(e) = r {
                let msg = format!("{kind} probe failed: {e}");
                self.event(EventType::Warning, "Unhealthy", &msg).await;
            }
            if let Some(out) = c.record(ok, p).and_then(&mut on_verdict) {
                return out;
            }
            tokio::time::sleep(p.period).await;
        }
    }

    /// Wait out the back-off (or until stopped: then false) and grow it.
    async fn back_off(&mut self, ran_for: Duration) -> bool {
        let go_on = tokio::select! {
            _ = tokio::time::sleep(self.backoff) => true,
            _ = self.terminating.cancelled() => false,
        };
        self.backoff = next_backoff(self.backoff, ran_for);
        go_on
    }

    /// The container cannot start: say why (waiting reason, message, Warning event), then back off.
    async fn blocked(
        &mut self,
        reason: &str,
        message: String,
        (event_reason, event): (&str, String),
    ) -> bool {
        self.shared.update(self.i, |r| {
            r.state = State::Waiting {
                reason: reason.into(),
                message: Some(message),
            }
        });
        self.event(EventType::Warning, event_reason, &event).await;
        self.back_off(Duration::ZERO).await
    }

    /// The compiled workload, environment, mounts and log file of the next run, or why the
    /// container cannot start (waiting reason, message).
    async fn prepare(
        &self,
        fetched: crate::fetch::Fetched,
        pod_dir: &std::path::Path,
    ) -> Result<Prepared, (&'static str, String)> {
        let workload = self
            .ctx
            .runtime
            .prepare(&fetched.digest, fetched.source)
            .await
            .map_err(|e| ("CreateContainerError", e.to_string()))?;
        let config_err =
            |e: crate::volumes::VolumeError| ("CreateContainerConfigError", e.to_string());
        // Limits that do not parse stop the start: a container never runs unbounded because
        // its limit was unreadable.
        let limits = crate::volumes::limits(&self.c).map_err(config_err)?;
        // The environment is resolved at each start, as Kubernetes does (ConfigMap and Secret
        // changes show up on restart).
        let needs_sources = self.c.env_from.as_ref().is_some_and(|f| !f.is_empty())
            || self.c.env.iter().flatten().any(|e| {
                e.value_from
                    .as_ref()
                    .is_some_and(|v| v.config_map_key_ref.is_some() || v.secret_key_ref.is_some())
            });
        let sources = if needs_sources {
            crate::volumes::Sources::fetch(&self.ctx.client, &self.pod)
                .await
                .map_err(config_err)?
        } else {
            Default::default()
        };
        let env = crate::volumes::env(&self.c, &sources, &self.ctx.facts(&self.pod))
            .map_err(config_err)?;
        let (mut preopens, cwd) =
            crate::volumes::mounts(&self.c, &self.laid, &env).map_err(config_err)?;
        let restart = self
            .shared
            .snapshot()
            .get(self.i)
            .map(|r| r.restart_count)
            .unwrap_or(0);
        // An HTTP service does not terminate per request (a termination file would cost a
        // directory open per request), and a guest that cannot open files cannot write one:
        // neither gets a termination-message file, which saves creating it at every start.
        let wants_termination = !matches!(*workload, Workload::Http(_)) && workload.opens_files();
        let termination = if wants_termination {
            termination_file(&self.c, pod_dir, &mut preopens)
                .map_err(|e| ("CreateContainerError", e))?
        } else {
            None
        };
        let path = crate::logs::log_path(pod_dir, &self.c.name, restart.max(0) as u32);
        let log = crate::logs::LogSink::with_rotation(
            &path,
            self.ctx.active_logs.clone(),
            self.ctx.log_rotation,
        )
        .map_err(|e| ("CreateContainerError", e.to_string()))?;
        Ok(Prepared {
            workload,
            limits,
            env,
            preopens,
            termination,
            cwd,
            log,
        })
    }

    /// Run the container until it is done for good (returns whether its last run succeeded)
    /// or the pod is stopped (returns false).
    async fn run(mut self, pod_dir: &std::path::Path) -> bool {
        let pod_name = self.pod.metadata.name.clone().unwrap_or_default();
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let image = self.c.image.clone().unwrap_or_default();
        let cname = self.c.name.clone();
        let mut pull_failures = 0u32;
        let parsed = skiff_common::image::ImageRef::parse(&image);
        let module_name = parsed
            .as_ref()
            .map(|r| r.short_name().to_string())
            .unwrap_or_else(|_| cname.clone());
        let pull_policy = match &parsed {
            Ok(r) => PullPolicy::of(self.c.image_pull_policy.as_deref(), r),
            Err(_) => PullPolicy::Always,
        };
        // The same words at each start with the module at hand, so restarts add to one event's
        // count (as Kubernetes' "already present on machine").
        let present = format!("Module \"{image}\" already present on the node");
        let from_registry = matches!(parsed, Ok(skiff_common::image::ImageRef::Registry { .. }));
        let mut _held: Option<crate::fetch::Held> = None;
        while !self.terminating.is_cancelled() {
            // A registry's module: the pod's pull Secrets, read at each attempt (only their
            // names ever go into an event).
            let pull = if from_registry {
                crate::pullsecrets::read(&self.ctx.client, &self.pod).await
            } else {
                Default::default()
            };
            if let Some(w) = pull.warning() {
                self.event(EventType::Warning, "FailedToRetrieveImagePullSecret", &w)
                    .await;
            }
            // Fetch, as the pull policy says: a module the node has starts without asking
            // the module store (IfNotPresent, Never); Always resolves the tag every time.
            let fetched = match self.ctx.fetcher.present(&image, pull_policy, &pull.creds) {
                Some(f) => {
                    self.event(EventType::Normal, "Pulled", &present).await;
                    f
                }
                None if pull_policy == PullPolicy::Never => {
                    let msg =
                        format!("Module \"{image}\" is not present with pull policy of Never");
                    let event = ("ErrImageNeverPull", msg.clone());
                    if !self.blocked("ErrImageNeverPull", msg, event).await {
                        return false;
                    }
                    continue;
                }
                None => {
                    self.event(
                        EventType::Normal,
                        "Pulling",
                        &format!("Pulling module \"{image}\""),
                    )
                    .await;
                    let begun = std::time::Instant::now();
                    match self.ctx.fetcher.pull(&image, &pull.creds).await {
                        Ok(f) => {
                            let pulled = if f.cached {
                                present.clone()
                            } else {
                                format!(
                                    "Successfully pulled module \"{image}\" ({}) in {:?}",
                                    f.digest,
                                    begun.elapsed()
                                )
                            };
                            self.event(EventType::Normal, "Pulled", &pulled).await;
                            f
                        }
                        Err(e) => {
                            let reason = if pull_failures == 0 {
                                "ErrImagePull"
                            } else {
                                "ImagePullBackOff"
                            };
                            pull_failures += 1;
                            let event = format!("Failed to pull module \"{image}\": {e}");
                            if !self.blocked(reason, e.to_string(), ("Failed", event)).await {
                                return false;
                            }
                            continue;
                        }
                    }
                }
            };
            pull_failures = 0;
            let digest = fetched.digest.clone();
            // The module stays in the node's cache while this container may run it.
            _held = Some(self.ctx.fetcher.hold(&digest));
            self.shared.note(self.i, |r| r.image_id = Some(digest));
            // Compile, and build what the run gets.
            let prepared = match self.prepare(fetched, pod_dir).await {
                Ok(x) => x,
                Err((reason, msg)) => {
                    if !self
                        .blocked(reason, msg.clone(), ("Failed", format!("Error: {msg}")))
                        .await
                    {
                        return false;
                    }
                    continue;
                }
            };
            let log = prepared.log.clone();
            let termination = prepared.termination.clone();
            let argv = argv(&self.c, &module_name)
                .into_iter()
                .map(|a| {
                    crate::volumes::expand(&a, &|n| {
                        prepared
                            .env
                            .iter()
                            .find(|(k, _)| k == n)
                            .map(|(_, v)| v.clone())
                    })
                })
                .collect();
            let usage = self.ctx.usage_of(&self.pod, &cname);
            let restarts = self
                .shared
                .snapshot()
                .get(self.i)
                .map_or(0, |r| r.restart_count.max(0) as u64);
            usage
                .restarts
                .store(restarts, std::sync::atomic::Ordering::Relaxed);
            // Run.
            let (denied_tx, denied_rx) = tokio::sync::mpsc::unbounded_channel();
            self.report_denied_outbound(denied_rx);
            let allowed = self
                .pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::egress::ALLOWED_OUTBOUND_ANNOTATION))
                .map(|l| crate::egress::HostPattern::parse_list(l))
                .unwrap_or_default();
            let outbound = crate::egress::Outbound::factory(
                &self.ctx.gateway,
                crate::netpolicy::PodInfo::of(&self.pod),
                allowed,
                denied_tx,
            );
            let spec = RunSpec {
                argv,
                env: prepared.env,
                memory_limit: prepared.limits.memory,
                log: log.clone(),
                preopens: prepared.preopens,
                cwd: prepared.cwd,
                cpu_millis: prepared.limits.cpu_millis,
                usage,
                outbound,
            };
            if self.terminating.is_cancelled() {
                return false;
            }
            let probes = Probes::of(&self.c);
            let (served, spec) = match &*prepared.workload {
                Workload::Http(pre) => (Some(self.served(pre.clone(), spec)), None),
                _ => (None, Some(spec)),
            };
            // The gateway knows an HTTP container before its pod can be reported Ready.
            if let Some(s) = &served {
                self.ctx.gateway.add(s.clone());
            }
            let started_at = Timestamp::now();
            let ready_now = probes.readiness.is_none() && probes.startup.is_none();
            self.shared.update(self.i, |r| {
                r.state = State::Running { started_at };
                r.ready = ready_now;
            });
            tracing::debug!(pod = %pod_name, container = %cname, "container running");
            if let Some(started) = self.started.take() {
                let _ = started.send(());
            }
            self.event(
                EventType::Normal,
                "Started",
                &format!("Started container {cname}"),
            )
            .await;
            let run_began = std::time::Instant::now();
            let run_stop = self.stop.child_token();
            let exit = {
                let work = async {
                    match (&served, spec) {
                        (Some(s), _) => self.serve(s, &run_stop).await,
                        (None, Some(spec)) => {
                            self.ctx
                                .runtime
                                .run(&prepared.workload, spec, run_stop.clone())
                                .await
                        }
                        (None, None) => Exit::Failed("nothing to run".into()),
                    }
                };
                tokio::pin!(work);
                let probing = self.probe(served.clone(), &probes);
                tokio::pin!(probing);
                let mut stopping = false;
                loop {
                    tokio::select! {
                        exit = &mut work => break exit,
                        // A deletion: the container may finish within the grace period, as the
                        // kubelet says when it sends SIGTERM.
                        _ = self.terminating.cancelled(), if !stopping => {
                            stopping = true;
                            self.event(
                                EventType::Normal,
                                "Killing",
                                &format!("Stopping container {cname}"),
                            )
                            .await;
                        }
                        why = &mut probing, if !stopping => {
                            self.event(
                                EventType::Normal,
                                "Killing",
                                &format!("Container {cname} {why}, will be restarted"),
                            )
                            .await;
                            run_stop.cancel();
                            let _ = (&mut work).await;
                            break Exit::Killed(format!("Container {why}"));
                        }
                    }
                }
            };
            let finished_at = Timestamp::now();
            let (exit_code, reason, message) = match &exit {
                Exit::Stopped => {
                    // The pod failed as a whole (deadline, eviction) or its deletion's grace
                    // period ran out: the container was killed.
                    let why = self.shared.failure().map(|(_, why)| why);
                    self.shared.update(self.i, |r| {
                        r.state = State::Terminated {
                            exit_code: 137,
                            reason: "Error".into(),
                            message: why,
                            started_at,
                            finished_at,
                        };
                        r.will_restart = false;
                    });
                    return false;
                }
                Exit::Code(0) => (0, "Completed".to_string(), None),
                Exit::Code(code) => (*code, "Error".to_string(), None),
                Exit::Trap(msg) => (134, "Error".to_string(), Some(msg.clone())),
                Exit::OutOfMemory(msg) => (137, "OOMKilled".to_string(), Some(msg.clone())),
                Exit::Failed(msg) => (128, "StartError".to_string(), Some(msg.clone())),
                Exit::Killed(msg) => (137, "Error".to_string(), Some(msg.clone())),
            };
            // What the guest wrote to its terminationMessagePath comes first, as in Kubernetes.
            let written = termination.as_ref().and_then(read_termination_message);
            let message = written.or(message).or_else(|| {
                let fallback =
                    self.c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
                (fallback && exit_code != 0)
                    .then(|| log.tail_text(80))
                    .filter(|t| !t.is_empty())
            });
            let restart = match (self.init, policy.as_str()) {
                _ if self.terminating.is_cancelled() => false,
                _ if self.sidecar => true,
                (_, "Never") => false,
                (true, _) | (false, "OnFailure") => exit_code != 0,
                _ => true,
            };
            let terminated = State::Terminated {
                exit_code,
                reason: reason.clone(),
                message,
                started_at,
                finished_at,
            };
            tracing::info!(pod = %pod_name, container = %cname, exit_code, %reason, "container exited");
            if !restart {
                self.shared.update(self.i, |r| {
                    r.state = terminated;
                    r.will_restart = false;
                });
                return exit_code == 0;
            }
            if run_began.elapsed() >= Duration::from_secs(600) {
                self.backoff = Duration::from_secs(10);
            }
            let wait_msg = format!(
                "back-off {}s restarting failed container={cname} pod={pod_name}",
                self.backoff.as_secs()
            );
            self.shared.update(self.i, |r| {
                r.last_state = Some(terminated);
                r.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(wait_msg),
                };
                r.will_restart = true;
            });
            self.event(
                EventType::Warning,
                "BackOff",
                &format!("Back-off restarting failed container {cname} in pod {pod_name}"),
            )
            .await;
            if !self.back_off(run_began.elapsed()).await {
                return false;
            }
            self.shared.update(self.i, |r| r.restart_count += 1);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: State, will_restart: bool, restarts: i32) -> Record {
        Record {
            name: "c".into(),
            image: "x".into(),
            image_id: None,
            state,
            last_state: None,
            restart_count: restarts,
            will_restart,
            ready: true,
            init: false,
            sidecar: false,
        }
    }

    fn sidecar(state: State, restarts: i32) -> Record {
        Record {
            init: true,
            sidecar: true,
            will_restart: true,
            ..rec(state, true, restarts)
        }
    }

    fn term(code: i32) -> State {
        let t = Timestamp::now();
        State::Terminated {
            exit_code: code,
            reason: "x".into(),
            message: None,
            started_at: t,
            finished_at: t,
        }
    }

    #[test]
    fn phase_table() {
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        let running = State::Running {
            started_at: Timestamp::now(),
        };
        let cases: Vec<(Vec<Record>, &str)> = vec![
            (vec![rec(waiting.clone(), false, 0)], "Pending"),
            (vec![rec(running.clone(), false, 0)], "Running"),
            (vec![rec(term(0), false, 0)], "Succeeded"),
            (vec![rec(term(3), false, 0)], "Failed"),
            (
                vec![rec(term(0), false, 0), rec(term(1), false, 0)],
                "Failed",
            ),
            (
                vec![rec(term(0), false, 0), rec(running.clone(), false, 0)],
                "Running",
            ),
            (vec![rec(waiting.clone(), false, 2)], "Running"),
            (vec![rec(term(1), true, 0)], "Running"),
            // A sidecar that has not started holds the pod in Pending; once started it does
            // not count for the phase, whatever its state.
            (
                vec![sidecar(waiting.clone(), 0), rec(running.clone(), false, 0)],
                "Pending",
            ),
            (
                vec![sidecar(running.clone(), 0), rec(term(0), false, 0)],
                "Succeeded",
            ),
            (
                vec![sidecar(term(137), 0), rec(term(1), false, 0)],
                "Failed",
            ),
            (
                vec![sidecar(waiting.clone(), 1), rec(running.clone(), false, 0)],
                "Running",
            ),
        ];
        for (records, want) in cases {
            assert_eq!(phase(&records), want, "{records:?}");
        }
    }

    #[test]
    fn argv_table() {
        let c = |command: Option<Vec<&str>>, args: Option<Vec<&str>>| Container {
            name: "c".into(),
            command: command.map(|v| v.into_iter().map(String::from).collect()),
            args: args.map(|v| v.into_iter().map(String::from).collect()),
            ..Default::default()
        };
        let cases = vec![
            (c(None, None), vec!["hello"]),
            (c(None, Some(vec!["a", "b"])), vec!["hello", "a", "b"]),
            (
                c(Some(vec!["prog", "-v"]), Some(vec!["x"])),
                vec!["prog", "-v", "x"],
            ),
            (c(Some(vec![]), Some(vec!["x"])), vec!["hello", "x"]),
        ];
        for (container, want) in cases {
            assert_eq!(argv(&container, "hello"), want);
        }
    }

    #[test]
    fn transition_times_carry_over_while_status_holds() {
        let at = |s: &str| Some(Time(s.parse().unwrap()));
        let c = |t: &str, status: &str, when: &str| PodCondition {
            type_: t.into(),
            status: status.into(),
            last_transition_time: at(when),
            ..Default::default()
        };
        let old = vec![
            c("Ready", "False", "2026-01-01T00:00:00Z"),
            c("PodScheduled", "True", "2026-01-01T00:00:00Z"),
        ];
        let mut new = vec![
            c("Ready", "True", "2026-01-02T00:00:00Z"),
            c("PodScheduled", "True", "2026-01-02T00:00:00Z"),
            c("Initialized", "True", "2026-01-02T00:00:00Z"),
        ];
        carry_transition_times(&mut new, &old);
        let times: Vec<String> = new
            .iter()
            .map(|c| c.last_transition_time.as_ref().unwrap().0.to_string())
            .collect();
        assert_eq!(
            times,
            [
                "2026-01-02T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z"
            ]
        );
    }

    #[test]
    fn backoff_table() {
        let s = Duration::from_secs;
        for (cur, ran, want) in [
            (s(10), s(1), s(20)),
            (s(160), s(1), s(300)),
            (s(300), s(1), s(300)),
            (s(300), s(601), s(10)),
        ] {
            assert_eq!(next_backoff(cur, ran), want);
        }
    }
}
