// Run a body, then close what it used, whatever happened. The body's error is the one its caller
// sees: a close that fails after a failed body (a flush failing again, a lease the body already
// reported lost) is handed to `suppressed`, where it used to replace the first cause.

export async function closeAfter<T>(body: () => Promise<T>, close: () => Promise<void>, suppressed: (err: unknown) => void): Promise<T> {
  let result: T;
  try {
    result = await body();
  } catch (err) {
    try {
      await close();
    } catch (closeErr) {
      try {
        suppressed(closeErr);
      } catch {
        // (reporting it failed too: the body's error still goes out)
      }
    }
    throw err;
  }
  await close(); // the body succeeded: a failing close is the error (what it did is not durable)
  return result;
}
