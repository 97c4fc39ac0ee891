// The S3 test target: NBD_VAULT_TEST_S3_URL (+ AWS_* credentials) from `scripts/rgw.sh start`.
// Absent: S3 tests are skipped with a message, unless NBD_VAULT_REQUIRE_S3=1, which makes them fail.
import { randomBytes } from 'node:crypto';
import { parseStoreUrl, type S3StoreOptions } from '../../src/store';
import { S3Store } from '../../src/store/s3-store';

export const S3_URL = process.env.NBD_VAULT_TEST_S3_URL ?? '';
export const S3_REQUIRED = process.env.NBD_VAULT_REQUIRE_S3 === '1';
// Required and absent: the suites run and every test fails (makeTestS3Store throws), never skip.
export const S3_SKIP = S3_URL || S3_REQUIRED
  ? undefined
  : 'NBD_VAULT_TEST_S3_URL is not set: start RGW with `scripts/rgw.sh start /tmp/rgw 7480 && . /tmp/rgw/s3.env` (set NBD_VAULT_REQUIRE_S3=1 to make this a failure)';

/** A fresh S3Store under a unique sub-prefix of the test URL. */
export function makeTestS3Store(extra: Partial<S3StoreOptions> = {}): S3Store {
  if (!S3_URL) throw new Error('NBD_VAULT_REQUIRE_S3=1 but NBD_VAULT_TEST_S3_URL is not set (run scripts/rgw.sh start DIR PORT and source DIR/s3.env)');
  const u = parseStoreUrl(S3_URL);
  if (u.kind !== 's3') throw new Error('NBD_VAULT_TEST_S3_URL is not an s3:// URL');
  return new S3Store({
    bucket: u.bucket,
    prefix: `${u.prefix}run-${Date.now()}-${randomBytes(4).toString('hex')}/`,
    endpoint: u.endpoint,
    region: u.region,
    forcePathStyle: u.forcePathStyle,
    requestTimeoutMs: 30_000,
    ...extra,
  });
}
