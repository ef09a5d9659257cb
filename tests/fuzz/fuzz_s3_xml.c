/*
 * fuzz_s3_xml.c - libFuzzer target for the S3 response reader
 * (backup/bk_store_s3.c, expat underneath): ListObjectsV2 pages,
 * ListObjectVersions pages (<Version>, <DeleteMarker>, NextKeyMarker,
 * NextVersionIdMarker), ListMultipartUploads pages (<Upload> with Key,
 * UploadId and Initiated; NextUploadIdMarker), DeleteObjects results
 * (with <VersionId>), GetBucketVersioning answers and error bodies
 * (Ceph RGW's empty <Message/> included), as a server or a man in the
 * middle could send them.
 *
 * The answer must be 0, -EPROTO (not well-formed) or -ENOMEM; on 0 every
 * list entry and per-key error kept has a key, a delete marker and an
 * upload (Initiated >= 0; -1 for every other entry) have their version
 * or upload id, and an error's lock flag is 0 or 1 (the probe returns
 * -EFAULT otherwise), the counts are bounded by the input (each entry
 * needs at least "<Contents>" or "<Error>"), and the code and status
 * are NUL-terminated.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bk_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char code[64], status[32];
	size_t nents = 0, nerrs = 0;
	int rc;

	rc = bk_store_s3_xml_probe((const char *)data, size, &nents, &nerrs,
	    code, status);
	if (rc != 0 && rc != -EPROTO && rc != -ENOMEM)
		abort();
	if (rc != 0)
		return 0;
	if ((nents + nerrs) * 7 > size + 7 ||
	    memchr(code, '\0', 64) == NULL || memchr(status, '\0', 32) == NULL)
		abort();
	return 0;
}
