//! A bound on the API calls that ask one VM's agent at once: `info`,
//! `time`, `kvp`, `fs` and `shutdown` each open a connection to the agent,
//! so without a bound a viewer looping on `GET /v1/vms/{name}/info` could
//! take every one of the agent's connection slots and lock the operators'
//! exec and cp out of that VM. Past [`MAX_AGENT_CALLS_PER_VM`] in flight,
//! the next call is answered 503 `resource_limit` at once. The access
//! middleware takes a slot for every route that reaches the agent
//! ([`RouteRule::reaches_agent`](crate::access::RouteRule::reaches_agent)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use crate::limits::MAX_AGENT_CALLS_PER_VM;

/// The slots of every VM with a call in flight.
#[derive(Debug, Default)]
pub(crate) struct AgentCalls {
    /// By VM name; an entry lives only while one of its slots is held,
    /// so names that callers make up cost nothing once their call ends.
    per_vm: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One call's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct AgentCallSlot {
    calls: Arc<AgentCalls>,
    vm: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl AgentCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        self.per_vm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a call to `vm`'s agent, or 503 when it has
    /// [`MAX_AGENT_CALLS_PER_VM`] in flight.
    pub(crate) fn take(self: &Arc<Self>, vm: &str) -> Result<AgentCallSlot, Error> {
        let mut per_vm = self.lock();
        let slots = per_vm
            .entry(vm.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_AGENT_CALLS_PER_VM)));
        let permit = slots.clone().try_acquire_owned().map_err(|_| {
            Error::Busy(format!(
                "VM {vm} already has {MAX_AGENT_CALLS_PER_VM} calls to its agent in flight (info, time, kvp, fs, shutdown); retry when one has ended"
            ))
        })?;
        Ok(AgentCallSlot {
            calls: self.clone(),
            vm: vm.to_string(),
            permit: Some(permit),
        })
    }

    #[cfg(test)]
    /// VMs with a call in flight.
    pub(crate) fn busy_vms(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for AgentCallSlot {
    fn drop(&mut self) {
        // Under the lock, as in `take`: no call can take a slot of an
        // entry between the check and its removal.
        let mut per_vm = self.calls.lock();
        drop(self.permit.take());
        if per_vm
            .get(&self.vm)
            .is_some_and(|slots| slots.available_permits() == MAX_AGENT_CALLS_PER_VM)
        {
            per_vm.remove(&self.vm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_gets_its_bound_of_calls_and_no_entry_outlives_them() {
        let calls = Arc::new(AgentCalls::default());
        let held: Vec<_> = (0..MAX_AGENT_CALLS_PER_VM)
            .map(|_| calls.take("web1").unwrap())
            .collect();
        let refused = calls.take("web1").unwrap_err().to_string();
        assert!(
            refused.contains("web1") && refused.contains("in flight"),
            "{refused}"
        );
        assert!(calls.take("web2").is_ok(), "another VM is not affected");
        assert_eq!(calls.busy_vms(), 1, "web2's entry went with its slot");
        drop(held);
        assert_eq!(calls.busy_vms(), 0);
        assert!(calls.take("web1").is_ok());
    }
}
