-- A stream's events are found through the unique (stream_id, stream_version) index, whose order
-- within a stream is the log's. The second index on stream_id cost every append one more random
-- page to write (stream ids are random uuids) and answered nothing the first does not.
DROP INDEX events_by_stream;
