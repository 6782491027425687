/* Identity map: each anonymous id linked to a login id, the first link winning. Grain: one row per anonymous_id. The filter of links must imply the predicate of PostgreSQL's partial index events_identity_links (cohortflow/warehouse.py). */
with

links as (
    select
        link_anonymous_id as anonymous_id,
        link_login_id as login_id,
        event_time as linked_at,
        received_at,
        ingest_file,
        ingest_line
    from raw.events
    where link_anonymous_id is not null
        and link_login_id is not null
        and link_anonymous_id <> link_login_id
),

-- Login ids never merge with each other: a login id is never treated as anonymous.
login_ids as (
    select distinct login_id from links
),

ranked as (
    select
        links.anonymous_id,
        links.login_id,
        links.linked_at,
        row_number() over (
            partition by links.anonymous_id
            order by links.linked_at, links.received_at, links.ingest_file collate "C", links.ingest_line
        ) as link_rank
    from links
    where links.anonymous_id not in (select login_ids.login_id from login_ids)
),

final as (
    select
        anonymous_id,
        login_id,
        linked_at
    from ranked
    where link_rank = 1
)

select * from final
