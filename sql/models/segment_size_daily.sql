/* Segment size: distinct members of each configured segment per as-of date, 0 on a date without members. Grain: one row per segment_name and as_of_date. */
{% import 'macros/dates.sql' as dates %}
with

calendar as (
    {{ dates.range_dates('as_of_date') | indent(4) }}
),

segments as (
    select distinct segment_name from meta.def_segment_nodes
),

membership as (
    select
        segment_name,
        as_of_date,
        user_id
    from models.segment_membership_daily
    where as_of_date between cast(:start_date as date) and cast(:end_date as date)
),

final as (
    select
        segments.segment_name,
        calendar.as_of_date,
        count(distinct membership.user_id) as users
    from segments
    cross join calendar
    left join membership
        on membership.segment_name = segments.segment_name
        and membership.as_of_date = calendar.as_of_date
    group by segments.segment_name, calendar.as_of_date
)

select * from final
