//! What each tenant holds open in this process (sockets, subscriptions),
//! counted against a cap. Per process: a tenant spread over N API processes
//! may hold N times the cap, which bounds every process all the same.
//!
//! Written here rather than taken from a crate: it is one map of counters
//! under a lock, and a tokio `Semaphore` per tenant would need the same map
//! and the same clean-up of tenants that hold nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::values::TenantId;

#[derive(Clone)]
pub struct TenantSlots {
    inner: Arc<Inner>,
}

struct Inner {
    cap: usize,
    held: Mutex<HashMap<TenantId, usize>>,
}

/// One held slot, given back when dropped.
pub struct Slot {
    inner: Arc<Inner>,
    tenant: TenantId,
}

impl TenantSlots {
    pub fn new(cap: usize) -> TenantSlots {
        TenantSlots {
            inner: Arc::new(Inner {
                cap,
                held: Mutex::default(),
            }),
        }
    }

    pub fn cap(&self) -> usize {
        self.inner.cap
    }

    /// A slot of `tenant`'s, unless it already holds `cap` of them.
    pub fn try_take(&self, tenant: &TenantId) -> Option<Slot> {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.get(tenant).copied().unwrap_or(0);
        if count >= self.inner.cap {
            return None;
        }
        held.insert(tenant.clone(), count + 1);
        Some(Slot {
            inner: Arc::clone(&self.inner),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    #[test]
    fn a_tenant_holds_at_most_the_cap_and_others_are_unaffected() {
        let slots = TenantSlots::new(2);
        let (a, b) = (tenant("a"), tenant("b"));
        let first = slots.try_take(&a).expect("first");
        let _second = slots.try_take(&a).expect("second");
        assert!(slots.try_take(&a).is_none(), "past the cap");
        let _other = slots.try_take(&b).expect("another tenant's own slots");
        drop(first);
        assert!(
            slots.try_take(&a).is_some(),
            "a slot given back is free again"
        );
        assert_eq!(
            slots.inner.held.lock().unwrap()[&a],
            1,
            "the one taken just now was dropped"
        );
    }

    #[test]
    fn tenants_holding_nothing_are_forgotten() {
        let slots = TenantSlots::new(1);
        drop(slots.try_take(&tenant("a")));
        assert!(slots.inner.held.lock().unwrap().is_empty());
        let none = TenantSlots::new(0);
        assert!(none.try_take(&tenant("a")).is_none());
        assert!(none.inner.held.lock().unwrap().is_empty());
    }
}
