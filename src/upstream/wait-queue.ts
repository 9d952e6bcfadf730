/**
 * A FIFO of requests waiting for something scarce (a pooled upstream connection, one of an app's
 * upstream slots). A waiter leaves the queue when it is served, when its wait times out, or when its
 * signal aborts (its client left): it is never served after either.
 */

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  detach: (() => void) | undefined;
}

export class WaitQueue<T> {
  private readonly waiters: Waiter<T>[] = [];

  get length(): number {
    return this.waiters.length;
  }

  /**
   * Waits in line: resolves with what `serve` hands over, or rejects with `timedOut()` after `timeoutMS`
   * or with `abandoned()` once `signal` aborts.
   */
  wait(timeoutMS: number, timedOut: () => Error, signal?: AbortSignal, abandoned?: () => Error): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const leave = (err: Error) => {
        clearTimeout(waiter.timer);
        waiter.detach?.();
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(err);
      };
      const waiter: Waiter<T> = { resolve, reject, timer: setTimeout(() => leave(timedOut()), timeoutMS), detach: undefined };
      if (signal && abandoned) {
        const onAbort = () => leave(abandoned());
        signal.addEventListener('abort', onAbort, { once: true });
        waiter.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.waiters.push(waiter);
    });
  }

  /** Takes the first waiter off the queue (it is about to be served): its resolve and reject. */
  next(): Pick<Waiter<T>, 'resolve' | 'reject'> | undefined {
    const waiter = this.waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.detach?.();
    }
    return waiter;
  }

  /** Fails every waiter (the resource is closing). */
  rejectAll(err: Error): void {
    for (let w = this.next(); w; w = this.next()) w.reject(err);
  }
}
