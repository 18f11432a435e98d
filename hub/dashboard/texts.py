"""The dashboard's words in English and Chinese (zh-CN), one key each.

A page asks ``t("key")``; a key missing from a language falls back to
English, and a test checks that both languages have every key.
"""

from __future__ import annotations

LANGUAGES = ("en", "zh")

TEXTS: dict[str, dict[str, str]] = {
    "title": {"en": "After-sales hub", "zh": "售后渠道中台"},
    "sign_in": {"en": "Sign in", "zh": "登录"},
    "sign_out": {"en": "Sign out", "zh": "退出"},
    "token": {"en": "Admin token", "zh": "管理令牌"},
    "token_help": {"en": "One of security.tokens in the hub's config.",
                   "zh": "配置文件 security.tokens 中的一个令牌。"},
    "bad_token": {"en": "That token is not one of ours.", "zh": "令牌无效。"},
    "ready": {"en": "Ready", "zh": "就绪"},
    "not_ready": {"en": "Not ready", "zh": "未就绪"},
    "refreshes": {"en": "refreshes every {n} s", "zh": "每 {n} 秒自动刷新"},
    "signed_in_as": {"en": "signed in as {name} ({role})", "zh": "当前用户 {name}（{role}）"},
    "sources": {"en": "Sources", "zh": "接入渠道"},
    "destinations": {"en": "Destinations", "zh": "下游系统"},
    "healthy": {"en": "healthy", "zh": "正常"},
    "unhealthy": {"en": "unhealthy", "zh": "异常"},
    "degraded": {"en": "degraded", "zh": "降级"},
    "paused": {"en": "paused", "zh": "已暂停"},
    "webhook": {"en": "push (webhook)", "zh": "推送接入"},
    "poll": {"en": "polled", "zh": "轮询接入"},
    "lag": {"en": "lag", "zh": "延迟"},
    "circuit": {"en": "circuit", "zh": "熔断"},
    "quota": {"en": "calls", "zh": "调用"},
    "per_minute": {"en": "a minute", "zh": "次/分钟"},
    "last_error": {"en": "last error", "zh": "最近错误"},
    "pending": {"en": "pending", "zh": "待处理"},
    "dead": {"en": "dead", "zh": "死信"},
    "held": {"en": "held back", "zh": "被阻塞"},
    "inbox": {"en": "Inbox", "zh": "收件箱"},
    "quarantined": {"en": "quarantined", "zh": "已隔离"},
    "done": {"en": "done", "zh": "已处理"},
    "kpis": {"en": "Last 24 hours", "zh": "近 24 小时"},
    "tickets_created": {"en": "tickets created", "zh": "新建工单"},
    "first_response_p50": {"en": "first response (median)", "zh": "首次响应（中位数）"},
    "resolution_p50": {"en": "resolution (median)", "zh": "处理完结（中位数）"},
    "refunds": {"en": "refunds", "zh": "退款金额"},
    "charts": {"en": "The last hour, per minute", "zh": "最近一小时（每分钟）"},
    "received": {"en": "events received", "zh": "收到事件"},
    "settled": {"en": "pushes settled", "zh": "完成推送"},
    "backlog": {"en": "backlog (inbox + outbox)", "zh": "积压（收件箱 + 发件箱）"},
    "no_samples": {"en": "No samples yet: one is taken each minute.", "zh": "暂无数据：每分钟采样一次。"},
    "dead_letters": {"en": "Dead letters", "zh": "死信推送"},
    "none": {"en": "None.", "zh": "无。"},
    "retry": {"en": "Retry", "zh": "重试"},
    "retried": {"en": "Push {id} goes out again.", "zh": "推送 {id} 已重新发送。"},
    "not_dead": {"en": "Push {id} is not a dead letter any more.", "zh": "推送 {id} 已不是死信。"},
    "viewer_cannot": {"en": "Your role may look, not act.", "zh": "您的角色只能查看，不能操作。"},
    "recent_tickets": {"en": "Recent tickets", "zh": "最近工单"},
    "search": {"en": "Search", "zh": "搜索"},
    "search_help": {"en": "ticket id or order number", "zh": "工单号或订单号"},
    "any_status": {"en": "any status", "zh": "全部状态"},
    "ticket": {"en": "Ticket", "zh": "工单"},
    "channel": {"en": "channel", "zh": "渠道"},
    "type": {"en": "type", "zh": "类型"},
    "status": {"en": "status", "zh": "状态"},
    "reason": {"en": "reason", "zh": "原因"},
    "refund": {"en": "refund", "zh": "退款"},
    "created": {"en": "created", "zh": "创建时间"},
    "destination": {"en": "destination", "zh": "下游"},
    "event": {"en": "event", "zh": "事件"},
    "attempts": {"en": "attempts", "zh": "尝试次数"},
    "customer": {"en": "customer", "zh": "客户"},
    "order": {"en": "order", "zh": "订单"},
    "timeline": {"en": "Timeline", "zh": "处理记录"},
    "pushes": {"en": "Pushes", "zh": "推送"},
    "back": {"en": "Back", "zh": "返回"},
    "no_tickets": {"en": "No tickets match.", "zh": "没有匹配的工单。"},
    "problems": {"en": "Why", "zh": "原因"},
}


def translate(lang: str, key: str, **values: object) -> str:
    entry = TEXTS.get(key)
    if entry is None:
        return key
    return (entry.get(lang) or entry["en"]).format(**values)


def language_of(asked: str | None, cookie: str | None, accept: str | None) -> str:
    """``?lang=`` first, then the remembered choice, then the browser's first preference."""
    for choice in (asked, cookie):
        if choice in LANGUAGES:
            return choice
    first = (accept or "").split(",")[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"
