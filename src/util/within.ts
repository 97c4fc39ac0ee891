// Wait for a promise for at most a while. The promise goes on after a timeout (a rejection then is
// swallowed); the timer holds a stopping process only until one of the two happens.

export const TIMED_OUT = Symbol('timed out');

/** `p`'s value, or TIMED_OUT when `ms` pass first. */
export function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => ((late = true), resolve(TIMED_OUT)), Math.max(0, ms));
    p.then(
      (v) => (clearTimeout(timer), resolve(v)),
      (err) => {
        clearTimeout(timer);
        if (!late) reject(err);
      },
    );
  });
}

/** Whether `p` settles (either way) within `ms`. */
export async function settledWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  const settled = p.then(
    () => true,
    () => true,
  );
  return (await within(settled, ms)) !== TIMED_OUT;
}
