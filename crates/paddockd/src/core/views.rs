//! What callers see of sessions and environments, built here only: front
//! ends pass these messages on and never read records or manager internals.

use paddock_proto::v1::{
    Environment, IdleAction as PbIdleAction, Limits, Packages as PbPackages, Session,
    SessionState as PbState, TtlAction as PbTtlAction, Usage,
};

use crate::environments::{Base, EnvironmentManager, EnvironmentRecord};
use crate::store::{IdleAction, SessionRecord, SessionState, TtlAction};

/// `usage`: what the session uses now, if it was read (GetSession).
/// `idle_since`: when its last tool call ended (`None` while one is in flight).
pub fn session(
    r: &SessionRecord,
    denied_total: u64,
    usage: Option<Usage>,
    idle_since: Option<i64>,
) -> Session {
    Session {
        id: r.id.clone(),
        state: match r.state {
            // A warm sandbox is never shown; one being handed out is starting.
            SessionState::Creating | SessionState::Warm => PbState::Creating,
            SessionState::Running => PbState::Running,
            SessionState::Paused => PbState::Paused,
            SessionState::Stopped | SessionState::Deleted => PbState::Stopped,
        } as i32,
        limits: Some(Limits {
            memory_bytes: Some(r.limits.memory_bytes),
            cpus: Some(r.limits.cpus),
            pids: Some(r.limits.pids),
            disk_bytes: Some(r.limits.disk_bytes),
        }),
        created_at_ms: r.created_at_ms,
        expires_at_ms: r.expires_at_ms.unwrap_or(0),
        init_pid: r.process.map(|p| p.pid).unwrap_or(0),
        labels: r.labels.clone().into_iter().collect(),
        resources: r.resources.clone(),
        network: r.network.as_ref().map(|p| p.to_proto()),
        network_denied_total: denied_total,
        environment_id: r.environment_id.clone(),
        environment_name: r.environment_name.clone(),
        tenant: r.tenant.clone(),
        usage,
        // A router's to fill in.
        node: String::new(),
        lost: false,
        auto_resume: r.auto_resume,
        idle_timeout_seconds: r.idle_timeout_ms / 1000,
        idle_action: match r.idle_action {
            IdleAction::Stop => PbIdleAction::Stop,
            IdleAction::Pause => PbIdleAction::Pause,
        } as i32,
        stop_reason: r.stop_reason.map(|s| s.to_proto() as i32).unwrap_or(0),
        last_activity_ms: idle_since.unwrap_or(0),
        paused_at_ms: r.paused_at_ms.unwrap_or(0),
        ttl_action: match r.ttl_action {
            TtlAction::Delete => PbTtlAction::Delete,
            TtlAction::Pause => PbTtlAction::Pause,
        } as i32,
    }
}

pub fn environment(envs: &EnvironmentManager, r: &EnvironmentRecord) -> Environment {
    let (state, current) = envs.build_state(r);
    let p = &r.packages;
    Environment {
        id: r.id.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        packages: Some(PbPackages {
            apt: p.apt.clone(),
            cargo: p.cargo.clone(),
            gem: p.gem.clone(),
            go: p.go.clone(),
            npm: p.npm.clone(),
            pip: p.pip.clone(),
        }),
        network: r.network.as_ref().map(|p| p.to_proto()),
        allow_privilege_escalation: r.allow_privilege_escalation,
        env: r.env.clone().into_iter().collect(),
        state: state as i32,
        layers: current.map(|i| envs.image_layers(&i)).unwrap_or_default(),
        build_error: r.build_error.clone().unwrap_or_default(),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        imported_base: match &r.base {
            Base::Imported { digest } => format!("sha256:{digest}"),
            Base::Daemon | Base::Snapshot(_) => String::new(),
        },
        snapshot_of: match &r.base {
            Base::Snapshot(s) => s.session.clone(),
            Base::Daemon | Base::Imported { .. } => String::new(),
        },
        tenant: r.tenant.clone(),
        warm_sandboxes: r.warm_sandboxes,
        shared: r.shared,
        image_env: r.image_config.env.iter().cloned().collect(),
        working_dir: r.image_config.working_dir.clone(),
        user: r.image_config.user.clone(),
    }
}
