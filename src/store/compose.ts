// composeStore: the one place that decides the order of store decorators.
//
// composeStore(base, a, b) === b(a(base)): layers are applied innermost first, so
// composeStore(memory, faultyLayer(rules, rng), retryLayer(policy)).name === 'retry(faulty(memory))'.
// A layer that is not a function, or that returns something that is not a store decorating its
// input, is rejected here (at wiring time, never under load) with ERR_INVALID_ARGUMENT / ERR_BUG.
import { BugError, VaultError } from '../errors';
import type { ObjectStore, StoreLayer } from './object-store';

export function composeStore(base: ObjectStore, ...layers: StoreLayer[]): ObjectStore {
  if (!isStore(base)) throw new VaultError('ERR_INVALID_ARGUMENT', 'composeStore: base is not an ObjectStore');
  let store = base;
  layers.forEach((layer, i) => {
    if (typeof layer !== 'function') {
      throw new VaultError('ERR_INVALID_ARGUMENT', `composeStore: layer ${i} is not a function (StoreLayer)`);
    }
    const next = layer(store);
    if (!isStore(next) || next.unwrap() !== store) {
      throw new BugError(`composeStore: layer ${i} did not return a store that decorates ${store.name}`);
    }
    store = next;
  });
  return store;
}

/** The first store in the stack (outermost first) that is an instance of `cls`, or null. */
export function findLayer<T extends ObjectStore>(store: ObjectStore, cls: abstract new (...args: never[]) => T): T | null {
  for (let s: ObjectStore | null = store; s; s = s.unwrap()) {
    if (s instanceof cls) return s as T;
  }
  return null;
}

/** The name of the innermost store: where the objects are (the same for a CLI command and a
 *  server on one store, whatever layers each adds, a disk cache say). */
export function baseStoreName(store: ObjectStore): string {
  let s = store;
  for (let inner = s.unwrap(); inner; inner = s.unwrap()) s = inner;
  return s.name;
}

function isStore(x: unknown): x is ObjectStore {
  const s = x as ObjectStore | null;
  return !!s && typeof s.get === 'function' && typeof s.put === 'function' && typeof s.unwrap === 'function';
}
