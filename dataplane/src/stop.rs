//! A single-threaded stop signal: one side fires it, any number of tasks on
//! the same worker await it. Used to stop accept loops when a snapshot drops
//! a listener, and to wake idle connections when the worker drains.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Inner {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
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
        for w in self.0.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.0.fired.get()
    }

    /// Completes once the signal has fired.
    pub(crate) fn wait(&self) -> Wait {
        Wait(self.clone())
    }
}

/// Future returned by [`Stop::wait`].
pub(crate) struct Wait(Stop);

impl Future for Wait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_fired() {
            return Poll::Ready(());
        }
        let mut wakers = self.0 .0.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
