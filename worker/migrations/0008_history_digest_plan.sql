-- The digest question (worker/history_reads.py, docs/history.md) planned once per session
-- instead of at every call.
--
-- The worker's and the api's pools plan every statement for its parameters
-- (plan_cache_mode = force_custom_plan, worker/db.py): a statement over the partitioned
-- history is then planned for every partition at every call, twice here (the entries
-- that start a span, and for each the change that ends it). At 20 partitions that was
-- about 2.5 ms of planning for 0.6 ms of execution. In this function the statement is
-- planned once per session, for any parameters (a generic plan, kept by PL/pgSQL; a
-- partition attached or dropped plans it again), and the SET clause holds for the
-- function's own statements only.
--
-- A generic plan does not know the digest, so it cannot tell that few entries carry it,
-- and it would rather walk every partition's (tag_ref, at) index in the page's order,
-- reading the whole history: ``s.tag_ref + 0`` orders by the same values through no
-- index, so the plan takes the artifact index and sorts the few entries found (as the
-- custom plan did). The answer is that of the statement it replaces, row for row.
CREATE FUNCTION ocitag_history_tags(p_prefix bigint, p_artifact bytea, p_tag_ref bigint,
                                    p_version bigint, p_history boolean, p_limit integer)
RETURNS TABLE (tag text, tag_ref bigint, start timestamptz, from_version integer,
               until timestamptz)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY
    SELECT n.name, s.tag_ref, s.at, s.version, e.at
    FROM ocitag_history s
    JOIN ocitag_history_names n ON n.ref = s.tag_ref
    LEFT JOIN LATERAL (
        SELECT h.at FROM ocitag_history h
        WHERE h.tag_ref = s.tag_ref AND h.at >= s.at AND (h.at, h.version) > (s.at, s.version)
          AND ((h.change & 7) = 4 OR h.artifact <> s.artifact)
        ORDER BY h.at, h.version LIMIT 1
    ) e ON true
    WHERE ('x' || encode(substring(s.artifact FROM 1 FOR 8), 'hex'))::bit(64)::bigint = p_prefix
      AND s.artifact = p_artifact AND (s.change & 7) IN (0, 1, 2)
      AND (s.tag_ref, s.version) > (p_tag_ref, p_version)
      AND (p_history OR e.at IS NULL)
    ORDER BY s.tag_ref + 0, s.version
    LIMIT p_limit;
END $$;
