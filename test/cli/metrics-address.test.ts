// --metrics addresses: a bare port is loopback; HOST:PORT and [v6]:PORT as given; junk refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseMetricsAddress } from '../../src/cli/metrics';

test('--metrics address parsing', () => {
  assert.deepEqual(parseMetricsAddress('9100'), { host: '127.0.0.1', port: 9100 });
  assert.deepEqual(parseMetricsAddress('0.0.0.0:9100'), { host: '0.0.0.0', port: 9100 });
  assert.deepEqual(parseMetricsAddress('[::1]:9100'), { host: '::1', port: 9100 });
  for (const bad of ['99999', 'localhost', 'host:port', ':x', '']) {
    assert.throws(() => parseMetricsAddress(bad), /--metrics/, bad);
  }
});
