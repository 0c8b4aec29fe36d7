// Small shared pieces of the browser tests.

/** The account the tests sign in as (every login name is an account at the test IdP). */
export const USER = 'alice';

/** Reject with `what` after `ms`. */
export function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
