/* Active users per day: DAU, WAU (7 days ending on the date), MAU (30 days ending on it) and stickiness, with whether each is final (the late-arrival window has passed, and the WAU and MAU windows lie inside the loaded history). Grain: one row per activity_date. */
{% import 'macros/dates.sql' as dates %}
with

calendar as (
    {{ dates.range_dates('activity_date') | indent(4) }}
),

-- The days the windows of the range can see: every active day of the range itself, and before it each user's latest
-- active day only (a window ending in the range reaches an earlier day of a user exactly when it reaches the latest).
-- A night's few dates then join about one row per user, not thirty.
active_days as (
    select
        activity_date,
        user_id
    from models.user_activity_daily
    where activity_date between cast(:start_date as date) and cast(:end_date as date)
    union all
    select
        max(activity_date) as activity_date,
        user_id
    from models.user_activity_daily
    where activity_date between cast(:start_date as date) - 29 and cast(:start_date as date) - 1
    group by user_id
),

-- Each of those days is the user's latest active day from that date until the day before their next one: a user
-- counts for a date through the one row that is their latest on it, so the counts need no distinct.
spans as (
    select
        activity_date,
        lead(activity_date) over (partition by user_id order by activity_date) as next_date
    from active_days
),

windows as (
    select
        calendar.activity_date,
        count(case when spans.activity_date = calendar.activity_date then 1 end) as dau,
        count(case when spans.activity_date > calendar.activity_date - 7 then 1 end) as wau,
        count(spans.activity_date) as mau
    from calendar
    left join spans
        on spans.activity_date between calendar.activity_date - 29 and calendar.activity_date
        and (spans.next_date is null or spans.next_date > calendar.activity_date)
    group by calendar.activity_date
),

final as (
    select
        activity_date,
        dau,
        wau,
        mau,
        case when mau = 0 then 0.0 else cast(dau as double) / mau end as stickiness,
        activity_date + cast(:late_arrival_days as integer) <= cast(:as_of_date as date) as is_complete,
        activity_date + cast(:late_arrival_days as integer) <= cast(:as_of_date as date)
            and activity_date - 6 >= cast(:first_date as date) as is_wau_complete,
        activity_date + cast(:late_arrival_days as integer) <= cast(:as_of_date as date)
            and activity_date - 29 >= cast(:first_date as date) as is_mau_complete
    from windows
)

select * from final
