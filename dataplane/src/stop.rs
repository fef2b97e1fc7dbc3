//! A single-threaded stop signal: one side fires it, any number of tasks on
//! the same worker await it. Used to stop accept loops when a snapshot drops
//! a listener, and to wake idle connections when the worker drains.
//!
//! A waiter that is dropped before the signal fires (an idle connection
//! that got its next request, or closed) takes its waker out again, so
//! waiting holds nothing once it ends.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Inner {
    fired: Cell<bool>,
    next_id: Cell<u64>,
    wakers: RefCell<foldhash::HashMap<u64, Waker>>,
}

/// A stop signal shared by tasks of one worker.
#[derive(Clone, Default)]
pub(crate) struct Stop(Rc<Inner>);

impl Stop {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Fires the signal and wakes every waiter.
    pub(crate) fn fire(&self) {
        self.0.fired.set(true);
        let wakers: Vec<Waker> = self.0.wakers.borrow_mut().drain().map(|(_, w)| w).collect();
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.0.fired.get()
    }

    /// Completes once the signal has fired.
    pub(crate) fn wait(&self) -> Wait {
        Wait {
            stop: self.clone(),
            id: None,
        }
    }

    #[cfg(test)]
    fn waiters(&self) -> usize {
        self.0.wakers.borrow().len()
    }
}

/// Future returned by [`Stop::wait`].
pub(crate) struct Wait {
    stop: Stop,
    /// Our entry among the wakers, once registered.
    id: Option<u64>,
}

impl Future for Wait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = Rc::clone(&self.stop.0);
        if inner.fired.get() {
            return Poll::Ready(());
        }
        let id = *self.id.get_or_insert_with(|| {
            let id = inner.next_id.get();
            inner.next_id.set(id + 1);
            id
        });
        let mut wakers = inner.wakers.borrow_mut();
        match wakers.get_mut(&id) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => *w = cx.waker().clone(),
            None => {
                wakers.insert(id, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.stop.0.wakers.borrow_mut().remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let stop = Stop::new();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let mut w = stop.wait();
            assert!(Pin::new(&mut w).poll(&mut cx).is_pending());
        }
        assert_eq!(stop.waiters(), 0);
        let mut w = stop.wait();
        assert!(Pin::new(&mut w).poll(&mut cx).is_pending());
        assert_eq!(stop.waiters(), 1);
        stop.fire();
        assert!(Pin::new(&mut w).poll(&mut cx).is_ready());
    }
}
